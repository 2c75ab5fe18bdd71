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
const vm = require('vm');
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
  queueText(name, decoder.write(head));
}

// Output is sent in pieces of up to 64 KiB: consecutive writes to one stream are joined until the event
// loop turns (a cell that awaits streams as it goes), the piece is full, or the cell ends.
const PIECE = 64 * 1024;
const queued = [];
let queuedBytes = 0;
let flushScheduled = false;

function queueText(name, text) {
  if (!text) return;
  const last = queued[queued.length - 1];
  if (last && last[0] === name) last[1] += text;
  else queued.push([name, text]);
  queuedBytes += text.length;
  if (queuedBytes >= PIECE) flush();
  else if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

function flush() {
  flushScheduled = false;
  for (const [name, text] of queued.splice(0)) send({ id: out.id, type: 'stream', name, text });
  queuedBytes = 0;
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
  flush();
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
    const interrupted = /^Script execution was interrupted/.test(String(err.message));
    let lines = String(err.stack || `${err.name}: ${err.message}`).split('\n');
    if (/^node:/.test(lines[0]) && lines.indexOf('') > 0) lines = lines.slice(lines.indexOf('') + 1); // engine source
    const kept = lines.filter((line) => !(/^\s+at /.test(line) && ENGINE_FRAME.test(line)));
    let message = interrupted ? 'execution interrupted (SIGINT)' : String(err.message);
    if (err instanceof SyntaxError) message += ' (the cell ran as JavaScript, in Node.js)';
    return {
      type: interrupted ? 'KeyboardInterrupt' : String(err.name || (err.constructor && err.constructor.name) || 'Error'),
      message,
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
let current = null;

function interrupt(id) {
  if (id === null || id !== current || !pending) return; // between cells
  const err = new Error('Script execution was interrupted by SIGINT while the cell awaited');
  const done = pending;
  pending = null;
  done(err, undefined);
}

function startRepl() {
  server = repl.start({
    input: new PassThrough(),
    output: new PassThrough().resume(), // the REPL's own prompts and echoes: discarded
    terminal: false,
    useGlobal: true,
    prompt: '',
  });
  // the REPL puts every built-in module on the global object (fs, net, ...): a cell's own `const fs`
  // after an await would then clash with it; cells require() what they use, as scripts do
  for (const name of require('module').builtinModules) {
    const own = Object.getOwnPropertyDescriptor(globalThis, name);
    if (own && own.configurable && !['process', 'console', 'crypto'].includes(name)) delete globalThis[name];
  }
  // an error thrown by a cell reaches the REPL's domain, not the eval callback: answer the cell with it
  server._domain.removeAllListeners('error');
  server._domain.on('error', (err) => {
    const done = pending;
    pending = null;
    if (done) done(err, undefined);
    else emit('stderr', `Uncaught ${errorDict(err).traceback}`);
  });
}

function compile(code, filename) {
  if (/^\s*\{/.test(code) && /\}\s*;?\s*$/.test(code)) {
    try {
      return new vm.Script(`(${code})`, { filename }); // {a: 1} is an object, as in Node's REPL
    } catch {
      // a block after all
    }
  }
  return new vm.Script(code, { filename });
}

// A cell is compiled as a script (its completion value is the result; let, const and class declarations
// persist in the global scope) and run with breakOnSigint. Only a cell with top-level await, which a
// script cannot have, goes through Node's REPL evaluator, which rewrites it into an async function.
function evaluate(code, name) {
  let script;
  try {
    script = compile(code, name);
  } catch (err) {
    if (err instanceof SyntaxError && /\bawait\b/.test(code)) return { promise: evaluateAsync(code, name) };
    throw err;
  }
  return { value: script.runInThisContext({ breakOnSigint: true, displayErrors: true }) };
}

function evaluateAsync(code, name) {
  let settle;
  const result = new Promise((resolve, reject) => {
    settle = (err, value) => (err ? reject(err) : resolve(value));
  });
  pending = settle;
  // called here, not inside the Promise's executor: no frame of ours under the cell's own
  server.eval(code, server.context, name, (err, value) => {
    const done = pending;
    pending = null;
    if (done) done(err, value);
  });
  return result;
}

async function execute(id, code) {
  begin(id);
  const started = process.hrtime.bigint();
  let reply = { status: 'ok' };
  try {
    cell += 1;
    current = id;
    const ran = evaluate(code, `cell-${cell}`);
    const value = 'promise' in ran ? await ran.promise : ran.value;
    if (value !== undefined) {
      let text = util.inspect(value, { depth: 6, maxArrayLength: 200, breakLength: 100 });
      if (text.length > RESULT_LIMIT) text = `${text.slice(0, RESULT_LIMIT)}... [cut at ${RESULT_LIMIT} characters]`;
      reply.result = text;
    }
  } catch (err) {
    reply = { status: 'error', error: errorDict(err) };
  }
  current = null;
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
// SIGINT (Node starts with it ignored): while a cell's synchronous code runs, vm's watchdog turns it into
// an error in that code; while a cell awaits, this listener ends the cell; between cells it does nothing.
process.on('SIGINT', () => interrupt(current));
startRepl();
evaluate('0', 'warm-up'); // warm the evaluators before the first request
evaluateAsync('await 0', 'warm-up').catch(() => {});
