package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"nhooyr.io/websocket"

	"github.com/diad-project/diad/shared"
)

// maxMessage bounds one websocket message (a step frame of a 256 px image is
// well under 1 MiB; the paper's 256 px maps plus PNGs stay under this).
const maxMessage = 32 << 20

// Denoiser is an open /ws/denoise connection. One request streams at a time:
// Request, then Next until a final frame or an error.
type Denoiser struct {
	conn   *websocket.Conn
	Server string // from the server's hello
}

// DialDenoise connects and waits for the server's hello.
func (c *Client) DialDenoise(ctx context.Context) (*Denoiser, error) {
	conn, _, err := websocket.Dial(ctx, c.wsURL("/api/v1/ws/denoise"), nil)
	if err != nil {
		return nil, fmt.Errorf("connect denoise stream: %w", err)
	}
	conn.SetReadLimit(maxMessage)
	typ, msg, err := conn.Read(ctx)
	if err != nil {
		conn.CloseNow()
		return nil, fmt.Errorf("denoise stream hello: %w", err)
	}
	var h shared.Hello
	if typ != websocket.MessageText || json.Unmarshal(msg, &h) != nil || h.Type != shared.TypeHello {
		conn.CloseNow()
		return nil, errors.New("denoise stream: no hello from server")
	}
	if h.Protocol != shared.ProtocolVersion {
		conn.CloseNow()
		return nil, fmt.Errorf("denoise stream: server speaks protocol %d, this client %d (reload the page)", h.Protocol, shared.ProtocolVersion)
	}
	return &Denoiser{conn: conn, Server: h.Server}, nil
}

// Request starts a trajectory.
func (d *Denoiser) Request(ctx context.Context, r shared.DenoiseRequest) error {
	r.Type = shared.TypeDenoise
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := d.conn.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("send denoise request: %w", err)
	}
	return nil
}

// StreamError is an error the server reported on a stream (as opposed to a
// broken connection).
type StreamError struct{ Message string }

func (e *StreamError) Error() string { return "server: " + e.Message }

// Next reads the next frame of the current trajectory. A server-side failure
// comes back as *StreamError.
func (d *Denoiser) Next(ctx context.Context) (shared.Frame, [][]byte, error) {
	typ, msg, err := d.conn.Read(ctx)
	if err != nil {
		return shared.Frame{}, nil, fmt.Errorf("denoise stream: %w", err)
	}
	if typ == websocket.MessageText {
		var e shared.ErrorMessage
		if json.Unmarshal(msg, &e) == nil && e.Type == shared.TypeError {
			return shared.Frame{}, nil, &StreamError{Message: e.Message}
		}
		return shared.Frame{}, nil, fmt.Errorf("denoise stream: unexpected message %.80q", msg)
	}
	return shared.DecodeFrame(msg)
}

// Close ends the connection.
func (d *Denoiser) Close() { d.conn.Close(websocket.StatusNormalClosure, "bye") }

// FollowJob streams a job's events (history first, then live) to fn until the
// job ends (nil), ctx ends, or the connection breaks (an error: callers
// reconnect and get the history again).
func (c *Client) FollowJob(ctx context.Context, id string, fn func(shared.JobEvent)) error {
	conn, _, err := websocket.Dial(ctx, c.wsURL("/api/v1/ws/jobs/"+url.PathEscape(id)), nil)
	if err != nil {
		return fmt.Errorf("follow job %s: %w", id, err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	ended := false
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			// After the job's last event the server closes; how that close
			// reads differs between the browser and Go, so the event decides.
			if ended || websocket.CloseStatus(err) == websocket.StatusNormalClosure {
				return nil
			}
			return fmt.Errorf("follow job %s: %w", id, err)
		}
		var ev shared.JobEvent
		if err := json.Unmarshal(msg, &ev); err != nil {
			return fmt.Errorf("follow job %s: %w", id, err)
		}
		ended = ended || JobEnded(ev.State)
		fn(ev)
	}
}

// FollowChanges calls fn with every change the server announces
// (/api/v1/ws/changes) until ctx ends or the connection drops.
func (c *Client) FollowChanges(ctx context.Context, fn func(shared.Change)) error {
	conn, _, err := websocket.Dial(ctx, c.wsURL("/api/v1/ws/changes"), nil)
	if err != nil {
		return fmt.Errorf("changes: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			return fmt.Errorf("changes: %w", err)
		}
		var ch shared.Change
		if err := json.Unmarshal(msg, &ch); err != nil {
			return fmt.Errorf("changes: %w", err)
		}
		fn(ch)
	}
}

// JobEnded reports whether a job state is final.
func JobEnded(state string) bool {
	return state == shared.JobSucceeded || state == shared.JobFailed || state == shared.JobCancelled
}

// Backoff is the reconnection delay schedule: doubling from Min to Max.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next is the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else if b.cur *= 2; b.cur > b.Max {
		b.cur = b.Max
	}
	return b.cur
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.cur = 0 }
