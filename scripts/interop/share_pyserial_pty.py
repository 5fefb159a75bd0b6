"""pyserial's rfc2217:// client against sertun share on a pty the Go test
holds (TestSharePyserialPty drives the other side). Usage: PORT."""

import os
import sys

import serial

from share_proto import check, digest, fail, read_exact, say


def send(port, data):
    say("SEND", len(data), digest(data))
    port.write(data)
    port.flush()
    check("sent")


def receive(port):
    n, want = check("recv")
    got = read_exact(port, int(n), 30)
    if digest(got) != want:
        fail("data from the device arrived changed (%d bytes)" % len(got))


def main():
    url = "rfc2217://127.0.0.1:%s" % sys.argv[1]

    port = serial.serial_for_url(url, baudrate=57600, timeout=1)
    check("settings", "57600", "1", "none")

    # Binary data both ways, with a run of 0xFF (the telnet IAC byte).
    send(port, os.urandom(32 * 1024) + b"\xff" * 512)
    receive(port)

    port.baudrate = 9600
    port.stopbits = serial.STOPBITS_TWO
    port.rtscts = True
    check("settings", "9600", "2", "rtscts")
    port.rtscts = False
    check("settings", "9600", "2", "none")
    port.close()

    # The port is free again for the next client.
    port = serial.serial_for_url(url, baudrate=57600, timeout=1)
    send(port, b"second client\n" + os.urandom(2048))
    receive(port)
    port.close()
    say("DONE")


main()
