//go:build !unix

package fdio

import "io"

// FD is the data path of one descriptor; here the plain conn or file's.
type FD struct{ plain io.ReadWriter }

// New returns the data path of c: plain itself, on this system.
func New(_ any, plain io.ReadWriter) *FD { return &FD{plain: plain} }

// Nonblocking reports whether TryWrite can write: never here.
func (f *FD) Nonblocking() bool { return false }

func (f *FD) Read(p []byte) (int, error)  { return f.plain.Read(p) }
func (f *FD) Write(p []byte) (int, error) { return f.plain.Write(p) }

// TryWrite writes nothing here: every write goes through Write.
func (f *FD) TryWrite([]byte) int { return 0 }

func (f *FD) TryRead([]byte) int { return 0 }
