"""A program on sertun attach's virtual port: pyserial opening the link as a
local serial port. TestAttach* drives it line by line on stdin; each command
answers one line on stdout, "OK ..." or "ERR ...".

    OPEN BAUD        open the link (argv[1]) at BAUD
    WRITE FILE       write FILE's bytes to the port, wait until sent
    READ N FILE      read N bytes (30 s at most) into FILE
    BAUD B           change the baud rate of the open port
    SET ATTR N       set a setting of the open port: stopbits, rtscts or
                     xonxoff (N a number; 0 and 1 for the flow controls)
    CLOSE            close the port
"""

import sys
import time

import serial


def main():
    link = sys.argv[1]
    port = None
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        try:
            if cmd[0] == "OPEN":
                port = serial.Serial(link, baudrate=int(cmd[1]), timeout=1)
                print("OK", flush=True)
            elif cmd[0] == "WRITE":
                with open(cmd[1], "rb") as f:
                    data = f.read()
                port.write(data)
                port.flush()
                print("OK", len(data), flush=True)
            elif cmd[0] == "READ":
                n = int(cmd[1])
                got = bytearray()
                deadline = time.monotonic() + 30
                while len(got) < n and time.monotonic() < deadline:
                    got += port.read(n - len(got))
                with open(cmd[2], "wb") as f:
                    f.write(got)
                print("OK", len(got), flush=True)
            elif cmd[0] == "BAUD":
                port.baudrate = int(cmd[1])
                print("OK", flush=True)
            elif cmd[0] == "SET" and cmd[1] in ("stopbits", "rtscts", "xonxoff"):
                value = int(cmd[2])
                setattr(port, cmd[1], value if cmd[1] == "stopbits" else bool(value))
                print("OK", flush=True)
            elif cmd[0] == "CLOSE":
                port.close()
                print("OK", flush=True)
            else:
                print("ERR unknown command", cmd[0], flush=True)
        except Exception as e:  # the test shows what went wrong
            print("ERR", type(e).__name__, str(e).replace("\n", " "), flush=True)


main()
