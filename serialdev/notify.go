package serialdev

import "sync"

// notifier is the StatusChanged channel of a port: signals coalesce in its
// buffer of one, and it is closed once, however many goroutines race to
// signal or close it.
type notifier struct {
	mu     sync.Mutex
	ch     chan struct{}
	closed bool
}

func newNotifier() *notifier { return &notifier{ch: make(chan struct{}, 1)} }

func (n *notifier) signal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		select {
		case n.ch <- struct{}{}:
		default:
		}
	}
}

func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.closed = true
		close(n.ch)
	}
}

// isClosed reports whether close was called.
func (n *notifier) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}
