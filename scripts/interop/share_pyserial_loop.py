"""pyserial's rfc2217:// client against sertun share loop://. Usage: PORT.
Prints OK at the end; any failure exits 1 with the reason on stderr."""

import os
import sys

import serial

from share_proto import fail, read_exact, wait_for


def echo(port, data):
    port.write(data)
    got = read_exact(port, len(data), 20)
    if got != data:
        fail("echo of %d bytes came back changed" % len(data))


def lines(port):
    return {"DSR": port.dsr, "DCD": port.cd, "CTS": port.cts}


def expect_lines(port, dtr, rts):
    port.dtr = dtr
    port.rts = rts
    want = {"DSR": dtr, "DCD": dtr, "CTS": rts}
    wait_for("DTR %s RTS %s to show as %s (now %s)" % (dtr, rts, want, lines(port)),
             lambda: lines(port) == want)


def main():
    url = "rfc2217://127.0.0.1:%s" % sys.argv[1]
    # pyserial checks that every answer equals its request: opening at 7E1
    # fails unless the server took and reported these settings.
    port = serial.serial_for_url(url, baudrate=19200, bytesize=7, parity="E",
                                 stopbits=1, timeout=1)
    got = (port.baudrate, port.bytesize, port.parity, port.stopbits)
    if got != (19200, 7, "E", 1):
        fail("settings after open: %r" % (got,))
    echo(port, b"The quick brown fox jumps over the lazy dog 0123456789\r\n" * 64)

    # Every setting: pyserial re-sends them all on each change and raises
    # unless each answer equals its request (loop:// keeps whatever is set).
    for baud, size, parity, stop in [(300, 5, "M", 1.5), (115200, 6, "S", 2),
                                     (230400, 8, "O", 1), (1000000, 7, "N", 2),
                                     (250000, 8, "E", 1)]:
        port.apply_settings({"baudrate": baud, "bytesize": size, "parity": parity,
                             "stopbits": stop})
    for flow in ("xonxoff", "rtscts"):
        port.apply_settings({flow: True})
        port.apply_settings({flow: False})

    port.apply_settings({"baudrate": 115200, "bytesize": 8, "parity": "N", "stopbits": 1})
    echo(port, os.urandom(16 * 1024) + b"\xff" * 512 + b"\r\n\r\x00\xff\xfe")

    # loop:// wires DTR to DSR and DCD, RTS to CTS.
    expect_lines(port, True, True)
    expect_lines(port, False, False)
    expect_lines(port, True, False)
    expect_lines(port, False, True)
    expect_lines(port, False, False)

    # Each of these waits for the server's answer and raises without one.
    port.break_condition = True
    port.break_condition = False
    port.send_break(0.05)
    port.reset_input_buffer()
    port.reset_output_buffer()
    echo(port, b"still echoing after break and purge\n")
    port.close()
    print("OK")


main()
