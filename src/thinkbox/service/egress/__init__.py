"""The egress proxy: the only way out of the service's sessions, with secrets swapped in on the host side.

- :class:`Egress` (:mod:`.manager`): one proxy per session, its mounts and environment;
- :mod:`.proxy`: the HTTP/1.1 forward proxy (absolute-form http, CONNECT with TLS terminated by the
  installation's CA, :mod:`.ca`);
- :mod:`.policy` and :mod:`.rules`: which hosts a tenant's sessions may reach;
- :mod:`.swap`: placeholders in, real values out, answers scrubbed.

Wiring the secret store is one argument: ``Egress(settings, db, grants=store)`` where ``store`` is any
:class:`~thinkbox.service.secrets.grant.GrantSource`.
"""

from thinkbox.service.egress.manager import Egress, SessionEgress

__all__ = ["Egress", "SessionEgress"]
