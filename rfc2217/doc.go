// Package rfc2217 shares serial ports over TCP: a telnet codec, the Com
// Port Control Option of RFC 2217, a server (Server) and a client (Dial).
//
// # Layers
//
//	telnet.go   Telnet: bytes in, data and events out; option negotiation
//	            (RFC 1143 Q method); AppendData/AppendSubneg encode. No I/O.
//	comport.go  one struct per COM-PORT-OPTION command, DecodeCommand,
//	            AppendCommand, mapping to and from serialdev values.
//	server.go     Server: listeners, client policy (Exclusive, KickOld,
//	              Shared), sessions coming and going.
//	session.go    one opening of the device, shared by its clients: the
//	              device reader, the status watcher, the settings commands.
//	serverconn.go one client: its reader (telnet decode, data to the
//	              device, commands), its writer and bounded queues.
//	client.go     Dial: a remote port as a serialdev.Port.
//
// # Server data paths
//
//	device --Read 64K--> readDevice --escape--> TCP (a write that never waits)
//	                                 \--> rest: queue --> client writer --> TCP
//	TCP --Read 32K--> client reader --Decode in place--> Port.Write
//	                               \--> commands --> answers (control queue)
//
// Each client has two queues: control (answers, notifications, telnet
// replies), always written first, and device data. With one client at a
// time a full data queue (Config.ClientBuffer) holds the device reader
// back; shared, the client that falls behind is dropped with a log line
// giving the counts, and the others go on. FLOWCONTROL-SUSPEND stops the
// writer; nothing is dropped.
//
// # Wire
//
// Telnet (RFC 854): a data byte 255 travels as IAC IAC, in data and in
// subnegotiations alike. Commands:
//
//	IAC WILL|WONT|DO|DONT opt         negotiation, 3 bytes
//	IAC SB opt payload... IAC SE      subnegotiation
//	IAC cmd                           NOP, BRK, AYT, GA, ... (2 bytes)
//
// Without BINARY in a direction, a CR in data is sent CR NUL (and CR LF
// stays CR LF); the decoder drops the NUL.
//
// RFC 2217 runs inside subnegotiations of option 44:
//
//	client -> server   IAC SB 44 code value... IAC SE        code 0..12
//	server -> client   IAC SB 44 code+100 value... IAC SE
//
//	+------+----------------------+---------------------------------+
//	| code | command              | value                           |
//	+------+----------------------+---------------------------------+
//	|   0  | SIGNATURE            | text; empty asks for the peer's |
//	|   1  | SET-BAUDRATE         | uint32 big endian; 0 asks       |
//	|   2  | SET-DATASIZE         | 0 asks, 5..8                    |
//	|   3  | SET-PARITY           | 0 asks, 1 N 2 O 3 E 4 M 5 S     |
//	|   4  | SET-STOPSIZE         | 0 asks, 1, 2, 3 = 1.5           |
//	|   5  | SET-CONTROL          | Ctl* values                     |
//	|   6  | NOTIFY-LINESTATE     | Line* bits                      |
//	|   7  | NOTIFY-MODEMSTATE    | Modem* bits                     |
//	|   8  | FLOWCONTROL-SUSPEND  | none                            |
//	|   9  | FLOWCONTROL-RESUME   | none                            |
//	|  10  | SET-LINESTATE-MASK   | mask (default 0)                |
//	|  11  | SET-MODEMSTATE-MASK  | mask (default 255)              |
//	|  12  | PURGE-DATA           | 1 rx, 2 tx, 3 both              |
//	+------+----------------------+---------------------------------+
//
// # Negotiation
//
// Each option has two sides, ours (we WILL) and the peer's (it WILLs, we
// DO), each in one of the RFC 1143 states NO, YES, WANTNO, WANTYES with a
// queue bit. A request is answered once; an answer to our own request is
// not answered again, so two Q-method peers never loop. What the peer may
// turn on is a per-option table (Codec.Support); all else is refused.
//
// The server offers WILL BINARY, DO BINARY, WILL SGA and WILL ECHO on
// connect (the device echoes, so a plain telnet goes to character mode
// without a local echo) and agrees to COM-PORT-OPTION in either direction
// when asked (pyserial sends WILL and DO, gensio and hub4com WILL only); it
// does not ask for COM-PORT-OPTION itself, since RFC 2217 leaves that to
// the client and a plain telnet client then sees no request to refuse.
package rfc2217
