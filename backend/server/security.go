package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/diad-project/diad/shared"
)

// apiError writes the API's error body.
func apiError(c echo.Context, status int, format string, args ...any) error {
	return c.JSON(status, shared.APIError{Error: fmt.Sprintf(format, args...)})
}

// isLoopback reports whether addr (host:port) only listens on loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// requestToken is the bearer token of a request (header, or ?token= for
// websockets, which browsers cannot give headers).
// The scheme is case-insensitive (RFC 9110 section 11.1).
func requestToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	return r.URL.Query().Get("token")
}

// redactedURI is a request URI with any token query value replaced, for logs
// (browsers must send the token in the query string of websockets).
func redactedURI(r *http.Request) string {
	u := *r.URL
	q := u.Query()
	if !q.Has("token") {
		return r.RequestURI
	}
	q.Set("token", "REDACTED")
	u.RawQuery = q.Encode()
	return u.RequestURI()
}

// tokenMiddleware requires the token on mutating requests and websockets.
func (s *Server) tokenMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.cfg.Token == "" {
			return next(c)
		}
		r := c.Request()
		mutating := r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions
		websocket := strings.Contains(strings.ToLower(r.Header.Get("Upgrade")), "websocket")
		path := r.URL.Path
		read := s.readToken && (strings.HasPrefix(path, "/api/") || path == "/metrics")
		if !mutating && !websocket && !read {
			return next(c)
		}
		got := requestToken(r)
		if got == "" {
			return apiError(c, http.StatusUnauthorized, "missing token")
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Token)) != 1 {
			return apiError(c, http.StatusForbidden, "wrong token")
		}
		return next(c)
	}
}

// resolveReadToken turns the read_token setting into whether reads need the
// token: "auto" (or empty) means yes unless the server listens on loopback.
func resolveReadToken(setting, addr string) (bool, error) {
	switch strings.ToLower(setting) {
	case "", "auto":
		return addr != "" && !isLoopback(addr), nil
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, fmt.Errorf("server: read_token %q: want auto, on or off", setting)
}

// timeoutMiddleware bounds every plain request's context (websockets stream
// for as long as they need).
func (s *Server) timeoutMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if strings.HasPrefix(c.Path(), "/api/v1/ws/") || s.cfg.RequestTimeout <= 0 {
			return next(c)
		}
		ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.RequestTimeout)
		defer cancel()
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

// errOutsideRoots is returned for client paths that leave the allowed roots.
var errOutsideRoots = errors.New("path outside the configured data roots")

// confine resolves a client-supplied path against roots: relative paths are
// taken relative to the first root; the result (after resolving symlinks)
// must lie within one of the roots.
func confine(roots []string, p string) (string, error) {
	if p == "" || strings.ContainsRune(p, 0) {
		return "", errOutsideRoots
	}
	if len(roots) == 0 {
		return "", fmt.Errorf("%w (none configured)", errOutsideRoots)
	}
	for _, part := range strings.Split(filepath.ToSlash(p), "/") {
		if part == ".." {
			return "", errOutsideRoots
		}
	}
	cand := p
	if !filepath.IsAbs(cand) {
		cand = filepath.Join(roots[0], cand)
	}
	real, err := filepath.EvalSymlinks(cand)
	if err != nil {
		return "", fmt.Errorf("%w: %s", os.ErrNotExist, p)
	}
	for _, r := range roots {
		rr, err := filepath.EvalSymlinks(r)
		if err != nil {
			continue
		}
		if real == rr || strings.HasPrefix(real, rr+string(filepath.Separator)) {
			return real, nil
		}
	}
	return "", errOutsideRoots
}

// statusFor maps a path error to an HTTP status.
func statusFor(err error) int {
	switch {
	case errors.Is(err, errOutsideRoots):
		return http.StatusForbidden
	case errors.Is(err, os.ErrNotExist):
		return http.StatusNotFound
	}
	return http.StatusBadRequest
}

// headAsGet answers HEAD on every GET route (RFC 9110: HEAD is GET without
// the body): the request is routed as a GET and the body is discarded, so
// headers, status and Content-Length-less framing are those of the GET.
func headAsGet(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Method != http.MethodHead {
			return next(c)
		}
		r.Method = http.MethodGet
		c.Response().Writer = headWriter{c.Response().Writer}
		return next(c)
	}
}

// headWriter drops a HEAD response's body.
type headWriter struct{ http.ResponseWriter }

func (headWriter) Write(p []byte) (int, error) { return len(p), nil }
