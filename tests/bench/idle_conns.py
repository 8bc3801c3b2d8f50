#!/usr/bin/env python3
"""Holds N idle keep-alive HTTP connections to one address for the memory benchmark.

Each connection sends one GET and reads the whole response (so it is an idle keep-alive
connection, not a half-open one), then stays open. Prints "ready <open>" once all are idle and
keeps them until stdin closes. Loopback only.

usage: idle_conns.py HOST PORT N
"""
import asyncio
import sys


async def one(host, port, sem, held):
    async with sem:
        try:
            r, w = await asyncio.open_connection(host, port)
            w.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            await w.drain()
            head = await r.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await r.readexactly(length)
            held.append((r, w))
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            print(f"connection failed: {e}", file=sys.stderr)


async def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if not host.startswith("127.") and host != "::1":
        sys.exit("loopback only")
    held = []
    sem = asyncio.Semaphore(64)
    await asyncio.gather(*(one(host, port, sem, held) for _ in range(n)))
    print(f"ready {len(held)}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for _, w in held:
        w.close()


asyncio.run(main())
