package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"nhooyr.io/websocket"

	"github.com/diad-project/diad/backend/stream"
	"github.com/diad-project/diad/backend/strictjson"
	"github.com/diad-project/diad/shared"
)

// maxTrajectorySteps bounds a denoise request's steps (and so the frames a
// trajectory keeps for late subscribers).
const maxTrajectorySteps = 1000

// acceptWS upgrades with Origin checking (same origin plus the allow-list).
func (s *Server) acceptWS(c echo.Context) (*websocket.Conn, error) {
	conn, err := websocket.Accept(c.Response(), c.Request(), &websocket.AcceptOptions{OriginPatterns: s.cfg.AllowedOrigins})
	if err != nil {
		return nil, err // Accept has written the 403
	}
	return conn, nil
}

// pump writes a subscriber's messages to the connection until the stream
// ends or the client goes away; a client that does not read for writeTimeout
// is disconnected (its frames were being dropped meanwhile).
func (s *Server) pump(ctx context.Context, conn *websocket.Conn, sub *stream.Subscriber) error {
	defer sub.Close()
	for {
		m, ok := sub.Next(ctx.Done())
		if !ok {
			return ctx.Err()
		}
		typ := websocket.MessageText
		if m.Binary {
			typ = websocket.MessageBinary
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := conn.Write(wctx, typ, m.Data)
		cancel()
		if err != nil {
			return err
		}
		if m.Final {
			return nil
		}
	}
}

func (s *Server) wsJob(c echo.Context) error {
	sub, err := s.runner.Subscribe(c.Param("id"))
	if err != nil {
		return apiError(c, http.StatusNotFound, "no job %q", c.Param("id"))
	}
	s.serveSubscription(c, sub, "job finished")
	return nil
}

// serveSubscription writes a hub's messages to a websocket (reads are
// ignored) until the stream ends - closed normally with reason - or the
// client or the server goes away.
func (s *Server) serveSubscription(c echo.Context, sub *stream.Subscriber, reason string) {
	conn, err := s.acceptWS(c)
	if err != nil {
		sub.Close()
		return
	}
	defer conn.CloseNow()
	ctx, stop := s.wsContext(c, conn)
	defer stop()
	ctx = conn.CloseRead(ctx)
	if err := s.pump(ctx, conn, sub); err != nil {
		s.log.Debug("websocket: client gone", "path", c.Path(), "err", err)
		return
	}
	conn.Close(websocket.StatusNormalClosure, reason)
}

// publishChange tells every open page (/ws/changes) what changed.
func (s *Server) publishChange(c shared.Change) {
	c.Type = shared.TypeChange
	b, err := json.Marshal(c)
	if err != nil {
		s.log.Warn("change not published", "kind", c.Kind, "err", err)
		return
	}
	s.changes.Publish(stream.Message{Data: b})
}

// wsChanges streams shared.Change messages until the client or the server
// goes away; the page refetches what changed instead of polling.
func (s *Server) wsChanges(c echo.Context) error {
	s.serveSubscription(c, s.changes.Subscribe(), "")
	return nil
}

// wsContext is a websocket handler's context: the request's, ended also
// when the server shuts down - after a proper close frame (StatusGoingAway),
// so that clients know to reconnect (a cancelled read would only drop the
// connection).
func (s *Server) wsContext(c echo.Context, conn *websocket.Conn) (context.Context, func()) {
	ctx, cancel := context.WithCancel(c.Request().Context())
	stop := context.AfterFunc(s.wsCtx, func() {
		conn.Close(websocket.StatusGoingAway, "server shutting down")
		cancel()
	})
	return ctx, func() { stop(); cancel() }
}

func (s *Server) wsDenoise(c echo.Context) error {
	conn, err := s.acceptWS(c)
	if err != nil {
		return nil
	}
	defer conn.CloseNow()
	conn.SetReadLimit(64 << 10)
	ctx, stop := s.wsContext(c, conn)
	defer stop()
	hello, err := json.Marshal(shared.Hello{Type: shared.TypeHello, Protocol: shared.ProtocolVersion, Server: "diad " + s.status.Version.Diad})
	if err != nil {
		return fmt.Errorf("encode hello: %w", err)
	}
	if err := conn.Write(ctx, websocket.MessageText, hello); err != nil {
		return nil
	}
	fail := func(msg string) error {
		b, err := json.Marshal(shared.ErrorMessage{Type: shared.TypeError, Message: msg})
		if err == nil {
			err = conn.Write(ctx, websocket.MessageText, b)
		}
		if err == nil {
			err = conn.Close(websocket.StatusPolicyViolation, "bad request")
		}
		if err != nil {
			s.log.Debug("denoise: error message not sent", "err", err) // the client went away
		}
		return nil // the websocket is answered; nothing more for echo to write
	}
	// refuse answers a well-formed request that cannot run (no model yet, a
	// missing image, a sampler the model cannot use) and keeps the
	// connection: the client's next request may well work.
	refuse := func(msg string) error {
		b, err := json.Marshal(shared.ErrorMessage{Type: shared.TypeError, Message: msg})
		if err == nil {
			err = conn.Write(ctx, websocket.MessageText, b)
		}
		return err
	}
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			return nil
		}
		req, guidance, msg := parseDenoiseRequest(typ, data)
		if msg != "" {
			return fail(msg)
		}
		if err := s.serveDenoise(ctx, conn, req, guidance); errors.Is(err, errClientGone) {
			return nil
		} else if err != nil {
			if err := refuse(err.Error()); err != nil {
				return nil // the client went away
			}
		}
	}
}

// errClientGone ends a denoise connection whose client went away.
var errClientGone = errors.New("client gone")

// parseDenoiseRequest reads one denoise message; msg says what is wrong
// with a malformed one (the connection is then closed).
func parseDenoiseRequest(typ websocket.MessageType, data []byte) (req shared.DenoiseRequest, guidance, msg string) {
	if typ != websocket.MessageText {
		return req, "", "send JSON text messages"
	}
	if err := strictjson.Unmarshal(data, &req); err != nil {
		return req, "", "malformed denoise request: " + err.Error()
	}
	if req.Type != shared.TypeDenoise {
		return req, "", "malformed denoise request: want {\"type\":\"denoise\", ...}"
	}
	for _, p := range req.Products {
		if !knownProduct(p) {
			return req, "", fmt.Sprintf("field \"products\": unknown product %q (want %v or %s)", p, shared.DefaultProducts, shared.ProductRawLatents)
		}
	}
	if req.Steps < 0 || req.Steps > maxTrajectorySteps || req.StartT < 0 {
		return req, "", fmt.Sprintf("steps must be 0..%d and start_t >= 0", maxTrajectorySteps)
	}
	guidance, err := req.GuidanceOrDefault()
	if err != nil {
		return req, "", err.Error()
	}
	return req, guidance, ""
}

// serveDenoise streams the trajectory of one well-formed request. An error
// is a request that cannot run (no model yet, a missing image, a sampler the
// model cannot use): the client is told, and the connection stays open for
// its next request. A client that went away ends the connection quietly.
func (s *Server) serveDenoise(ctx context.Context, conn *websocket.Conn, req shared.DenoiseRequest, guidance string) error {
	d, err := s.currentDenoiser()
	if err != nil {
		return err
	}
	src, err := s.resolveSource(req, d.path)
	if err != nil {
		return err
	}
	// One merge rule and one validation, against the model's own schedule;
	// a run image starts from the run's sampler.
	sampler, err := d.sampler(src.runSampler, req.SamplerOverride())
	if err != nil {
		return err
	}
	sub := s.trajectory(d, src, sampler, req, guidance).Subscribe()
	if err := s.pump(ctx, conn, sub); err != nil {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return nil
}
