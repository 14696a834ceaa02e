#!/usr/bin/env python3
"""Checks bench/paced_load against a server that misbehaves in known ways (run by ctest as
bench.paced-load-check; usage: paced_load_check.py PATH/TO/paced_load).

The server answers every 10th request 503, every 3rd one chunked (two chunks), closes the
connection after every 50th answer (Connection: close), and cuts one answer in the middle.
paced_load is run with uniform arrivals at 400/s for 1 s after a 0.25 s warm-up, so exactly 400
requests count; its PACED line must account for each of them: 2xx answers + 503s + the cut one,
with nothing unanswered, and every request must have carried the body file and the extra header.
"""
import os
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading

BODY = b'{"model":"default","messages":[{"role":"user","content":"hi"}]}'
lock = threading.Lock()
seen = {"n": 0, "bad_body": 0, "no_header": 0, "cut": 0}


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = self.request.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            while len(buf) < length:
                buf += self.request.recv(65536)
            body, buf = buf[:length], buf[length:]
            with lock:
                i = seen["n"]
                seen["n"] += 1
                seen["bad_body"] += body != BODY or not lines[0].startswith("POST /v1/chat/completions ")
                seen["no_header"] += headers.get("x-check") != "yes"
            answer = b'{"object":"chat.completion","choices":[]}'
            if i == 250:  # in the counted window: half an answer, then the connection ends
                with lock:
                    seen["cut"] += 1
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"object\"")
                return
            close = i % 50 == 49
            extra = b"Connection: close\r\n" if close else b""
            if i % 10 == 0:
                out = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n" + extra + b"\r\n{}"
            elif i % 3 == 1:
                half = len(answer) // 2
                out = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n"
                       + b"%x\r\n" % half + answer[:half] + b"\r\n"
                       + b"%x\r\n" % (len(answer) - half) + answer[half:] + b"\r\n0\r\n\r\n")
            else:
                out = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(answer) + extra + b"\r\n" + answer
            self.request.sendall(out)
            if close:
                return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    tool = sys.argv[1]
    srv = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        f.write(BODY + b"\n")  # the final newline is not sent
    try:
        p = subprocess.run([tool, "--port", str(srv.server_address[1]), "--rate", "400", "--duration", "1",
                            "--warmup", "0.25", "--arrivals", "uniform", "--conns", "4", "--body-file", f.name,
                            "--header", "x-check: yes"], capture_output=True, text=True, timeout=30)
    finally:
        os.unlink(f.name)
        srv.shutdown()
    line = next((l for l in p.stdout.splitlines() if l.startswith("PACED ")), None)
    problems = []
    if line is None:
        print(f"no PACED line; exit {p.returncode}\n{p.stdout}\n{p.stderr}")
        return 1
    r = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    ok, status, conn, missing = r["requests"], r["err_status"], r["err_conn"], r["unanswered"]
    if ok + status + conn != 400:
        problems.append(f"counted {ok} + {status} + {conn} requests, expected 400")
    if not 35 <= status <= 45:
        problems.append(f"{status} answers counted as non-2xx, expected about 40")
    if conn != 1 or seen["cut"] != 1:
        problems.append(f"err_conn {conn} for {seen['cut']} cut answer")
    if missing:
        problems.append(f"{missing} unanswered")
    if not 0 < r["p50_us"] <= r["p99_us"] <= r["max_us"]:
        problems.append("percentiles out of order")
    if p.returncode != 3:
        problems.append(f"exit status {p.returncode}, expected 3 (some requests failed)")
    if seen["bad_body"] or seen["no_header"]:
        problems.append(f"{seen['bad_body']} requests with another body or path, {seen['no_header']} without the header")
    if seen["n"] < 500:
        problems.append(f"the server saw {seen['n']} requests, expected 500 with the warm-up")
    print(line)
    for m in problems:
        print("FAIL:", m)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
