//go:build !js

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/diad-project/diad/frontend-wasm/hook"
	"github.com/diad-project/diad/shared"
)

// page drives the client in the browser.
type page struct {
	t     *testing.T
	ctx   context.Context
	dir   string
	close func()
}

func (p *page) state() hook.State {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	js, err := chromedp.Run(ctx, chromedp.Evaluate[string](`typeof diadState === "function" ? diadState() : "{}"`))
	if err != nil {
		logs, lerr := chromedp.Run(ctx, chromedp.Evaluate[string](`(window.diadLog || []).join("\n")`))
		p.t.Fatalf("read client state: %v\nclient console (%v):\n%s", err, lerr, logs)
	}
	var s hook.State
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		p.t.Fatalf("client state %q: %v", js, err)
	}
	return s
}

// wait polls the client's state until ok, failing after timeout with the
// last state.
func (p *page) wait(what string, timeout time.Duration, ok func(hook.State) bool) hook.State {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := p.state()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			s.Widgets = nil
			p.shot("timeout")
			p.t.Fatalf("waiting for %s: timed out; state %+v", what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// whileJobLives is a wait condition on job id as the client shows it: ok
// decides once the job is listed, and a job that ended failed or cancelled
// fails the test at once with its error (instead of waiting out the time
// limit for a job that can no longer succeed).
func (p *page) whileJobLives(id string, ok func(hook.State, hook.Job) bool) func(hook.State) bool {
	return func(s hook.State) bool {
		for _, x := range s.Jobs {
			if x.ID != id {
				continue
			}
			if x.State == shared.JobFailed || x.State == shared.JobCancelled {
				p.t.Fatalf("job %s (%s) %s: %s", id, x.Kind, x.State, x.Error)
			}
			return ok(s, x)
		}
		return false
	}
}

// do runs browser actions with a time limit (a hung browser fails the
// test instead of stalling it).
func (p *page) do(what string, acts ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, acts...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// hold is how long a key or button stays down: several frames, so that the
// frame loop sees the press (as with a human).
const hold = 90 * time.Millisecond

func (p *page) key(k string) {
	p.t.Helper()
	ev := input.DispatchKeyEventParams{Key: k}
	text := ""
	switch {
	case k == "Enter":
		ev.Code, ev.WindowsVirtualKeyCode, text = "Enter", 13, "\r"
	case k == " ":
		ev.Code, ev.WindowsVirtualKeyCode, text = "Space", 32, " "
	case k == "Escape":
		ev.Code, ev.WindowsVirtualKeyCode = "Escape", 27
	case k == "]":
		ev.Code, ev.WindowsVirtualKeyCode, text = "BracketRight", 221, "]"
	case k == "ArrowLeft" || k == "ArrowRight":
		ev.Code, ev.WindowsVirtualKeyCode = k, map[string]int64{"ArrowLeft": 37, "ArrowRight": 39}[k]
	case len(k) == 1 && k[0] >= 'a' && k[0] <= 'z':
		ev.Code, ev.WindowsVirtualKeyCode, text = "Key"+strings.ToUpper(k), int64(strings.ToUpper(k)[0]), k
	case len(k) == 1 && k[0] >= '0' && k[0] <= '9':
		ev.Code, ev.WindowsVirtualKeyCode, text = "Digit"+k, int64(k[0]), k
	default:
		p.t.Fatalf("key %q not mapped", k)
	}
	down, up := ev, ev
	down.Type, down.Text = input.DispatchKeyEventTypeKeyDown, text
	up.Type = input.DispatchKeyEventTypeKeyUp
	p.do("key "+k, call(input.DispatchKeyEvent, down), chromedp.Sleep(hold), call(input.DispatchKeyEvent, up), chromedp.Sleep(hold))
}

// withShift holds Shift down while f presses keys or clicks.
func (p *page) withShift(f func()) {
	p.t.Helper()
	ev := input.DispatchKeyEventParams{Key: "Shift", Code: "ShiftLeft", WindowsVirtualKeyCode: 16, Modifiers: 8}
	down, up := ev, ev
	down.Type, up.Type = input.DispatchKeyEventTypeKeyDown, input.DispatchKeyEventTypeKeyUp
	up.Modifiers = 0
	p.do("shift down", call(input.DispatchKeyEvent, down), chromedp.Sleep(hold))
	defer p.do("shift up", call(input.DispatchKeyEvent, up), chromedp.Sleep(hold))
	f()
}

// call makes a DevTools command an action.
func call[P, R any](c cdp.Command[P, R], params P) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, c, params)
		return err
	})
}

func mouse(typ input.DispatchMouseEventType, x, y float64, pressed bool) chromedp.Action[chromedp.Void] {
	p := input.DispatchMouseEventParams{Type: typ, X: x, Y: y}
	if typ != input.DispatchMouseEventTypeMouseMoved {
		p.Button, p.ClickCount = input.MouseButtonLeft, 1
	}
	if pressed {
		p.Button, p.Buttons = input.MouseButtonLeft, 1
	}
	return call(input.DispatchMouseEvent, p)
}

func (p *page) typeText(s string) {
	for _, r := range s {
		if r == ' ' {
			p.key(" ")
			continue
		}
		p.key(string(r))
	}
}

// click presses the left button in the middle of a widget of the client.
func (p *page) click(widget string) {
	p.t.Helper()
	r, ok := p.state().Widgets[widget]
	if !ok {
		p.t.Fatalf("no widget %q on screen", widget)
	}
	x, y := r.Center()
	p.clickAt(x, y)
}

func (p *page) clickAt(x, y float64) {
	p.t.Helper()
	p.do(fmt.Sprintf("click at %.0f,%.0f", x, y), mouse(input.DispatchMouseEventTypeMouseMoved, x, y, false), mouse(input.DispatchMouseEventTypeMousePressed, x, y, true),
		chromedp.Sleep(hold), mouse(input.DispatchMouseEventTypeMouseReleased, x, y, false), chromedp.Sleep(hold))
}

// drag moves the mouse with the button down from one point to another.
func (p *page) drag(x0, y0, x1, y1 float64) {
	p.t.Helper()
	acts := []chromedp.Action[chromedp.Void]{mouse(input.DispatchMouseEventTypeMouseMoved, x0, y0, false), mouse(input.DispatchMouseEventTypeMousePressed, x0, y0, true), chromedp.Sleep(hold)}
	for i := 1; i <= 8; i++ {
		x := x0 + (x1-x0)*float64(i)/8
		y := y0 + (y1-y0)*float64(i)/8
		acts = append(acts, mouse(input.DispatchMouseEventTypeMouseMoved, x, y, true), chromedp.Sleep(30*time.Millisecond))
	}
	acts = append(acts, chromedp.Sleep(hold), mouse(input.DispatchMouseEventTypeMouseReleased, x1, y1, false), chromedp.Sleep(hold))
	p.do("drag", acts...)
}

// partialMatchesFull checks the page's partial repaints: the screen as
// partial repaints left it (screenshot name-partial) against the same state
// painted whole (name-full), after a mouse move to (x, y) - a spot with no
// hover effect - makes the client repaint everything. r is the part to
// compare (the status bar's frame rate differs between any two frames).
func (p *page) partialMatchesFull(name string, x, y float64, r hook.Rect) {
	p.t.Helper()
	before := p.state()
	partial := p.shot(name + "-partial")
	p.do("mouse move", mouse(input.DispatchMouseEventTypeMouseMoved, x, y, false))
	p.wait("a whole repaint", 10*time.Second, func(s hook.State) bool { return s.Frames > before.Frames })
	time.Sleep(200 * time.Millisecond) // the repaint reaches the screen
	full := p.shot(name + "-full")
	if d := meanDiff(partial, full, r); d > 0.5 {
		p.t.Errorf("%s: the partially repainted screen differs from the same state painted whole by %.2f/255 on average in %v (screenshots %s-partial.png, %s-full.png)", name, d, r, name, name)
	}
}

// shot saves a screenshot as an artifact and returns it decoded.
func (p *page) shot(name string) image.Image {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, name+".png"), buf, 0o644); err != nil {
		p.t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	return img
}

// colourful measures a region of a screenshot: the standard deviation of
// its luminance and the share of saturated (heatmap-coloured) pixels.
func colourful(img image.Image, r hook.Rect) (lumaStd, saturated float64) {
	var sum, sum2 float64
	n, sat := 0, 0
	for y := int(r[1]) + 2; y < int(r[1]+r[3])-2; y++ {
		for x := int(r[0]) + 2; x < int(r[0]+r[2])-2; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			R, G, B := float64(cr>>8), float64(cg>>8), float64(cb>>8)
			l := 0.299*R + 0.587*G + 0.114*B
			sum += l
			sum2 += l * l
			n++
			if math.Max(R, math.Max(G, B))-math.Min(R, math.Min(G, B)) > 60 {
				sat++
			}
		}
	}
	if n == 0 {
		return 0, 0
	}
	mean := sum / float64(n)
	return math.Sqrt(math.Max(sum2/float64(n)-mean*mean, 0)), float64(sat) / float64(n)
}

func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("DIAD_SKIP_BROWSER") == "1" {
		t.Skip("no Chromium, and DIAD_SKIP_BROWSER=1")
	}
	t.Fatal("no Chromium found: `make test` runs inside the build root, which installs Debian's chromium; " +
		"with LIBTORCH or a system libtorch, install chromium (or set DIAD_SKIP_BROWSER=1 to skip the browser tests)")
	return ""
}

func openBrowser(t *testing.T, url string, w, h int64, scale float64) *page {
	exe := chromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe), chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Headless,
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("use-angle", "swiftshader"), chromedp.Flag("enable-unsafe-swiftshader", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(int(w), int(h)),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	var logs []string
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithLogf(func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }))
	t.Cleanup(func() { cancelC(); cancelA() })
	p := &page{t: t, ctx: ctx, dir: artifacts(t), close: func() { cancelC(); cancelA() }}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(w, h, chromedp.EmulateScale(scale)), chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v (%v)", url, err, logs)
	}
	return p
}

// meanDiff is the mean absolute RGB difference of two screenshots in r.
func meanDiff(a, b image.Image, r hook.Rect) float64 {
	var sum float64
	n := 0
	for y := int(r[1]); y < int(r[1]+r[3]); y++ {
		for x := int(r[0]); x < int(r[0]+r[2]); x++ {
			ar, ag, ab, _ := a.At(x, y).RGBA()
			br, bg, bb, _ := b.At(x, y).RGBA()
			sum += math.Abs(float64(ar>>8)-float64(br>>8)) + math.Abs(float64(ag>>8)-float64(bg>>8)) + math.Abs(float64(ab>>8)-float64(bb>>8))
			n += 3
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}
