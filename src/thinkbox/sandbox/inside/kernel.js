// The JavaScript engine of a session: a persistent Node.js interpreter, driven by the session's kernel
// (thinkbox.sandbox.inside.kernel, through thinkbox.sandbox.inside.engines) over the socket whose fd
// number is its first argument,
// with the framing of docs/protocol.md (4-byte big-endian length, then UTF-8 JSON).
//
// Messages from the kernel:
//   {"type": "confine", "uid", "gid"}   (a pre-started engine only: drop to the session's ids)
//   {"type": "setup", "env", "cwd", "output_bytes"}   then {"type": "ready"} or {"type": "ready", "error"}
//   {"id", "type": "execute", "code"}   stream messages, then one terminal reply, as in docs/protocol.md
//
// Cells run through Node's own REPL evaluator (node:repl): top-level await, declarations kept across
// cells, the value of the last expression as the result. console.log and process.stdout/stderr writes
// become stream messages; what child processes write to fds 1 and 2 is captured by the kernel.
// Node's built-in modules only: nothing else of thinkbox exists inside the sandbox.
'use strict';

const net = require('net');
const repl = require('repl');
const util = require('util');
const { PassThrough } = require('stream');
const { StringDecoder } = require('string_decoder');

const RESULT_LIMIT = 20000;
const TAIL_BYTES = 8 * 1024;
const ORPHAN_LIMIT = 1 << 20;

const sock = new net.Socket({ fd: Number(process.argv[1] || 3), readable: true, writable: true });
const realStderrWrite = process.stderr.write.bind(process.stderr);

function send(msg) {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  sock.write(Buffer.concat([head, body]));
}

// -- output ------------------------------------------------------------------------------------------
const out = {
  id: null,
  limit: 1 << 20,
  sent: 0,
  omitted: 0,
  tails: { stdout: [], stderr: [] },
  orphan: [],
  orphanBytes: 0,
};

function tailPush(name, buf) {
  const tail = out.tails[name];
  tail.push(buf);
  let size = tail.reduce((n, b) => n + b.length, 0);
  while (size - tail[0].length >= TAIL_BYTES) size -= tail.shift().length;
}

function emit(name, text) {
  if (!text) return;
  if (out.id === null) {
    if (out.orphanBytes < ORPHAN_LIMIT) {
      out.orphan.push([name, text]);
      out.orphanBytes += Buffer.byteLength(text);
    }
    return;
  }
  const buf = Buffer.from(text, 'utf8');
  const room = out.limit - out.sent;
  if (room <= 0) {
    out.omitted += buf.length;
    tailPush(name, buf);
    return;
  }
  let head = buf;
  if (buf.length > room) {
    head = buf.subarray(0, room);
    out.omitted += buf.length - room;
    tailPush(name, buf.subarray(room));
  }
  out.sent += head.length;
  const decoder = new StringDecoder('utf8'); // never split a character: a partial one is left out
  const piece = decoder.write(head);
  if (piece) send({ id: out.id, type: 'stream', name, text: piece });
}

function capture(name) {
  return function write(chunk, encoding, callback) {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    emit(name, text);
    const done = typeof encoding === 'function' ? encoding : callback;
    if (typeof done === 'function') process.nextTick(done);
    return true;
  };
}

function begin(id) {
  out.id = id;
  out.sent = 0;
  out.omitted = 0;
  out.tails = { stdout: [], stderr: [] };
  const orphan = out.orphan;
  out.orphan = [];
  out.orphanBytes = 0;
  for (const [name, text] of orphan) emit(name, text);
}

function end() {
  const summary = { omitted_bytes: out.omitted };
  if (out.omitted) {
    summary.tail = {
      stdout: Buffer.concat(out.tails.stdout).toString('utf8'),
      stderr: Buffer.concat(out.tails.stderr).toString('utf8'),
    };
  }
  out.id = null;
  return summary;
}

// -- errors --------------------------------------------------------------------------------------------
const ENGINE_FRAME = /\(node:|^\s*at node:|\[eval\]|REPLServer|ContextifyScript|\(domain|bound \(/;

function errorDict(err) {
  if (err instanceof repl.Recoverable && err.err) err = err.err; // incomplete input: its SyntaxError
  if (err instanceof Error || (err && typeof err === 'object' && 'stack' in err)) {
    const interrupted = /Script execution (was )?interrupted/.test(String(err.message));
    const lines = String(err.stack || `${err.name}: ${err.message}`).split('\n');
    const kept = lines.filter((line) => !(/^\s+at /.test(line) && ENGINE_FRAME.test(line)));
    return {
      type: interrupted ? 'KeyboardInterrupt' : String(err.name || (err.constructor && err.constructor.name) || 'Error'),
      message: interrupted ? 'execution interrupted (SIGINT)' : String(err.message),
      traceback: kept.join('\n') + '\n',
    };
  }
  const text = util.inspect(err);
  return { type: 'Uncaught', message: text, traceback: `Uncaught ${text}\n` };
}

// -- cells -----------------------------------------------------------------------------------------------
let server = null;
let pending = null;
let cell = 0;

function startRepl() {
  server = repl.start({
    input: new PassThrough(),
    output: new PassThrough().resume(), // the REPL's own prompts and echoes: discarded
    terminal: false,
    useGlobal: true,
    breakEvalOnSigint: true,
    prompt: '',
  });
  // an error thrown by a cell reaches the REPL's domain, not the eval callback: answer the cell with it
  server._domain.removeAllListeners('error');
  server._domain.on('error', (err) => {
    const done = pending;
    pending = null;
    if (done) done(err, undefined);
    else emit('stderr', `Uncaught ${errorDict(err).traceback}`);
  });
}

function evaluate(code) {
  cell += 1;
  return new Promise((resolve, reject) => {
    pending = (err, value) => (err ? reject(err) : resolve(value));
    server.eval(code, server.context, `cell-${cell}`, (err, value) => {
      const done = pending;
      pending = null;
      if (done) done(err, value);
    });
  });
}

async function execute(id, code) {
  begin(id);
  const started = process.hrtime.bigint();
  let reply = { status: 'ok' };
  try {
    const value = await evaluate(code);
    if (value !== undefined) {
      let text = util.inspect(value, { depth: 6, maxArrayLength: 200, breakLength: 100 });
      if (text.length > RESULT_LIMIT) text = `${text.slice(0, RESULT_LIMIT)}... [cut at ${RESULT_LIMIT} characters]`;
      reply.result = text;
    }
  } catch (err) {
    reply = { status: 'error', error: errorDict(err) };
  }
  reply.output = end();
  reply.duration_ms = Number(process.hrtime.bigint() - started) / 1e6;
  send({ id, type: 'reply', ...reply });
}

// -- set-up ----------------------------------------------------------------------------------------------
function confine(msg) {
  const uid = Number(msg.uid);
  const gid = Number(msg.gid);
  process.setgroups([]);
  process.setgid(gid);
  process.setuid(uid); // from root to another uid: every capability is gone (checked by the kernel too)
  send({ type: 'confined', uid: process.getuid(), gid: process.getgid() });
}

function setup(msg) {
  out.limit = Number(msg.output_bytes) || out.limit;
  for (const key of Object.keys(process.env)) delete process.env[key];
  Object.assign(process.env, msg.env || {});
  let error;
  try {
    process.chdir(String(msg.cwd || '/workspace'));
  } catch (err) {
    error = `the session's start directory ${JSON.stringify(msg.cwd)} cannot be entered: ${err.code} (SessionConfig.cwd)`;
  }
  process.stdout.write = capture('stdout');
  process.stderr.write = capture('stderr');
  send(error ? { type: 'ready', node: process.version, error } : { type: 'ready', node: process.version });
}

function handle(msg) {
  if (msg.type === 'execute') return execute(String(msg.id), String(msg.code || ''));
  if (msg.type === 'confine') return confine(msg);
  if (msg.type === 'setup') return setup(msg);
  if (msg.type === 'ping') return send({ type: 'pong' });
  send({ id: msg.id, type: 'reply', status: 'error', error: { type: 'ValueError', message: `unknown request ${msg.type}`, traceback: '' } });
}

// one request at a time, in order (the kernel sends the next only after the reply)
let queue = Promise.resolve();
let buffered = Buffer.alloc(0);
sock.on('data', (chunk) => {
  buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
  while (buffered.length >= 4) {
    const size = buffered.readUInt32BE(0);
    if (buffered.length < 4 + size) break;
    const msg = JSON.parse(buffered.subarray(4, 4 + size).toString('utf8'));
    buffered = buffered.subarray(4 + size);
    queue = queue.then(() => handle(msg)).catch((err) => realStderrWrite(`thinkbox js engine: ${err.stack}\n`));
  }
});
sock.on('end', () => process.exit(0));
sock.on('error', () => process.exit(1));

// a stray error (a timer's, a promise nobody awaited) is printed, never the end of the session's state
process.on('uncaughtException', (err) => emit('stderr', `Uncaught ${errorDict(err).traceback}`));
process.on('unhandledRejection', (err) => emit('stderr', `Uncaught (in promise) ${errorDict(err).traceback}`));
process.on('SIGINT', () => {}); // an interrupt between cells is ignored; a running cell gets it as an error
startRepl();
evaluate('0').catch(() => {}); // warm the evaluator before the first request
