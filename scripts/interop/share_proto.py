"""Helpers for the share_*.py interop scripts.

A script that needs the Go test to act on the device side (a pty master the
test holds) talks to it over stdio, one line at a time:

    script: CHECK name args...      test: OK [values...]   (or FAIL reason)
    script: SEND length sha256      (then writes length bytes to the port)

Everything else a script has to say goes to stderr.
"""

import hashlib
import sys
import time


def say(*words):
    print(*words, flush=True)


def fail(msg):
    print("FAIL:", msg, file=sys.stderr, flush=True)
    sys.exit(1)


def check(name, *args):
    """Asks the test to check the device; returns the values it answers."""
    say("CHECK", name, *args)
    reply = sys.stdin.readline().split()
    if not reply or reply[0] != "OK":
        fail("test answered %r to CHECK %s" % (" ".join(reply), name))
    return reply[1:]


def digest(data):
    return hashlib.sha256(data).hexdigest()


def read_exact(port, n, seconds):
    """Reads n bytes from a pyserial port, failing after the given time."""
    deadline = time.monotonic() + seconds
    buf = bytearray()
    while len(buf) < n:
        if time.monotonic() > deadline:
            fail("read %d of %d bytes in %ss" % (len(buf), n, seconds))
        buf += port.read(n - len(buf))
    return bytes(buf)


def wait_for(what, cond, seconds=3.0):
    """Polls cond until it holds, failing after the given time."""
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            fail("timed out waiting for " + what)
        time.sleep(0.01)
