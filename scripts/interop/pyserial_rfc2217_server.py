"""pyserial's RFC 2217 server, for TestAttachPyserialServer: the
serial.rfc2217.PortManager that pyserial's examples/rfc2217_server.py (and
esptool's esp_rfc2217_server, made from it) put in front of a port, run the
way that example runs it, with two differences a test needs:

- it listens on 127.0.0.1 only (the example listens on every address);
- a pty device gets no modem-line ioctls, which a pty refuses (the example
  fails on a pty at its first DTR change): DTR/RTS/break are accepted and
  dropped, and CTS, DSR and CD read as raised.

    pyserial_rfc2217_server.py DEVICE HOST PORT

It prints "listening" once it accepts connections and serves one client at
a time, as the example does.
"""

import logging
import socket
import sys
import threading

import serial
import serial.rfc2217


class PtySerial(serial.Serial):
    """A serial port on a pty: no modem lines to set or read."""

    def _update_rts_state(self):
        pass

    def _update_dtr_state(self):
        pass

    def _update_break_state(self):
        pass

    @property
    def cts(self):
        return True

    @property
    def dsr(self):
        return True

    @property
    def ri(self):
        return False

    @property
    def cd(self):
        return True


class Connection:
    """What PortManager writes its telnet replies to: the client socket,
    shared with the device reader, so whole writes are kept apart."""

    def __init__(self, sock):
        self.sock = sock
        self.lock = threading.Lock()

    def write(self, data):
        with self.lock:
            self.sock.sendall(data)


def serve(ser, sock):
    conn = Connection(sock)
    ser.dtr = True
    ser.rts = True
    manager = serial.rfc2217.PortManager(ser, conn, logger=logging.getLogger("rfc2217"))
    done = threading.Event()

    def device_to_client():
        while not done.is_set():
            data = ser.read(ser.in_waiting or 1)
            if data:
                try:
                    conn.write(b"".join(manager.escape(data)))
                except OSError:
                    return

    def poll_modem_lines():
        while not done.wait(1):
            manager.check_modem_lines()

    threads = [threading.Thread(target=f, daemon=True) for f in (device_to_client, poll_modem_lines)]
    for th in threads:
        th.start()
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                break
            ser.write(b"".join(manager.filter(data)))
    finally:
        done.set()
        # The reader stops within the port's timeout; it must not take
        # the next client's data.
        for th in threads:
            th.join()
        ser.dtr = False
        ser.rts = False


def main():
    device, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    ser = PtySerial() if device.startswith("/dev/pts/") else serial.serial_for_url(device, do_not_open=True)
    ser.port = device
    ser.timeout = 0.2
    ser.open()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(1)
    print("listening", flush=True)
    while True:
        sock, addr = srv.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        logging.info("client %s:%d", *addr)
        try:
            serve(ser, sock)
        except OSError as e:
            logging.info("client %s:%d: %s", addr[0], addr[1], e)
        finally:
            sock.close()
        logging.info("client %s:%d gone", *addr)


if __name__ == "__main__":
    main()
