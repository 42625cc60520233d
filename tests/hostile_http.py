"""A hostile HTTP server on 127.0.0.1 for the tests: it serves the files of a directory
honestly, except the paths told to misbehave, which get one of the answers of
``HostileServer.ANSWERS`` (slow, endless, oversized, malformed, redirecting).  It speaks
raw sockets, so that it can send what no HTTP library would: a status line that is not
HTTP, a status line of 70 KB, 150 headers, a byte every now and then."""

import socket
import threading
import time
from pathlib import Path


class HostileServer:
    """``answers[path] = name`` makes ``path`` misbehave; ``requests`` lists the paths
    asked for.  ``interval`` is the pause of the slow answers between two bytes."""

    ANSWERS = ("trickle", "trickle-headers", "silent", "endless", "oversized", "not-http",
               "many-headers", "huge-status", "redirect-loop", "garbage-length", "held")

    def __init__(self, directory):
        self.directory = Path(directory)
        self.answers, self.requests = {}, []
        self.interval = 0.2
        self.released = threading.Event()
        self.released.set()
        self.stopped = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.listener.getsockname()[1]

    def close(self):
        self.stopped.set()
        self.released.set()
        self.thread.join(5)
        self.listener.close()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        try:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                more = conn.recv(4096)
                if not more:
                    return
                request += more
            path = request.split(b" ", 2)[1].decode().split("?", 1)[0]
            self.requests.append(path)
            target = self.directory / path.lstrip("/")
            body = target.read_bytes() if ".." not in path and target.is_file() else None
            answer = self.answers.get(path)
            if answer is None:
                if body is None:
                    conn.sendall(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                return
            getattr(self, "_" + answer.replace("-", "_"))(conn, path, body or b"")
        except OSError:
            pass
        finally:
            conn.close()

    def _slowly(self, conn, data):
        """Send ``data`` a byte at a time, then keep sending a byte per interval."""
        position = 0
        while not self.stopped.is_set():
            conn.sendall(data[position:position + 1] if position < len(data) else b"\0")
            position += 1
            time.sleep(self.interval)

    def hold(self):
        """Make "held" answers wait (headers sent, body not) until the function
        returned is called."""
        self.released.clear()
        return self.released.set

    def _held(self, conn, path, body):
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        self.released.wait(60)
        conn.sendall(body)

    def _trickle(self, conn, path, body):
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        self._slowly(conn, body)

    def _trickle_headers(self, conn, path, body):
        self._slowly(conn, b"HTTP/1.0 200 OK\r\n" + b"X-Slow: yes\r\n" * 1000)

    def _silent(self, conn, path, body):
        self.stopped.wait()

    def _endless(self, conn, path, body):
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + body)
        block = b"\0" * 65536
        while not self.stopped.is_set():
            conn.sendall(block)

    def _oversized(self, conn, path, body):
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) + (1 << 30)) + body)
        block = b"\0" * 65536
        while not self.stopped.is_set():
            conn.sendall(block)

    def _not_http(self, conn, path, body):
        conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")

    def _many_headers(self, conn, path, body):
        conn.sendall(b"HTTP/1.0 200 OK\r\n" + b"".join(b"X-Header-%d: %d\r\n" % (i, i) for i in range(150))
                     + b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def _huge_status(self, conn, path, body):
        conn.sendall(b"HTTP/1.0 200 " + b"O" * 70_000 + b"\r\n\r\n" + body)

    def _redirect_loop(self, conn, path, body):
        conn.sendall(b"HTTP/1.0 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % path.encode())

    def _garbage_length(self, conn, path, body):
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: -12\x1b[31m\r\n\r\n" + body)
