#!/usr/bin/env python3
"""Serve a directory over HTTP on 127.0.0.1 with Range requests (what uproot needs), for tests and benchmarks.

    python scripts/http-range-server.py DIR [--port N] [--port-file FILE] [--user nobody]

Python's own http.server ignores ``Range`` (uproot then fails to read); PyPI ``rangehttpserver``
adds it. On top of that handler this server answers 403 for a file it may not read (as a real web
server does; the plain handler says 404), binds loopback only, and, started as root, drops to
``--user`` once the socket is bound (as ``xrootd -R nobody`` does) so that file permissions count.
With ``--port 0`` the kernel picks the port; it is printed as ``serving http://127.0.0.1:PORT/``
and written to ``--port-file``. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import sys
from functools import partial
from http import HTTPStatus
from http.server import ThreadingHTTPServer

from RangeHTTPServer import RangeRequestHandler


class Handler(RangeRequestHandler):
    """Range requests, 403 for unreadable files, no access log on stderr."""

    # headers and body go out in separate writes: without TCP_NODELAY every small response waits for
    # the client's delayed ACK (about 40 ms), which made many small range reads 50x slower
    disable_nagle_algorithm = True

    def send_head(self):
        path = self.translate_path(self.path)
        if os.path.isfile(path) and not os.access(path, os.R_OK):
            self.send_error(HTTPStatus.FORBIDDEN, "Permission denied")
            return None
        return super().send_head()

    def log_message(self, format: str, *args: object) -> None:
        pass


def drop_privileges(user: str) -> None:
    """Become ``user`` (only when running as root)."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, bind, drop privileges and serve until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--user", default="nobody", help="user to serve as when started as root")
    args = parser.parse_args(argv)
    directory = os.path.abspath(args.directory)
    if not os.path.isdir(directory):
        print(f"http-range-server: error: {directory}: not a directory", file=sys.stderr)
        return 1
    server = ThreadingHTTPServer(("127.0.0.1", args.port), partial(Handler, directory=directory))
    server.daemon_threads = True
    port = server.server_address[1]
    if args.port_file:  # before dropping privileges: the file's folder may be root's
        with open(args.port_file + ".tmp", "w") as fh:
            fh.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    drop_privileges(args.user)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"serving http://127.0.0.1:{port}/ from {directory}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
