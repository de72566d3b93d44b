package model

import (
	"strings"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/torchrt"
)

// The block timer hears every block of both networks once per pass: the
// UNet's input, middle and output blocks, the SG network's input and middle
// blocks and its hint block; and nothing once it is switched off.
func TestBlockTimerSeesEveryBlockOnce(t *testing.T) {
	defer torchrt.Pin()()
	m := newTiny(t)
	images, zt := tinyInputs(m, 1, 3)
	defer images.MustDrop()
	defer zt.MustDrop()
	seen := map[string]int{}
	var sum time.Duration
	timer := func(name string, d time.Duration) { seen[name]++; sum += d }
	m.UNet.SetBlockTimer(timer)
	m.SG.SetBlockTimer(timer)
	pass := func() {
		torchrt.NoGrad(func() { m.PredictEps(zt, []int{500}, images).MustDrop() })
	}
	start := time.Now()
	pass()
	wall := time.Since(start)
	in := m.UNet.InputBlocks()
	want := in + 3 + len(m.UNet.Config().ChannelMult)*(m.UNet.Config().NumResBlocks+1) + // UNet
		in + 3 + 1 // SG network, with its hint block
	if len(seen) != want {
		t.Fatalf("%d blocks timed, want %d: %v", len(seen), want, seen)
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%s timed %d times in one pass", name, n)
		}
		if !strings.HasPrefix(name, PrefixUNet) && !strings.HasPrefix(name, PrefixSG) {
			t.Errorf("block %q is not named by its network's prefix", name)
		}
	}
	if seen[PrefixSG+"input_hint_block."] != 1 || seen[PrefixUNet+"middle_block.1."] != 1 {
		t.Fatalf("hint block or UNet middle attention missing: %v", seen)
	}
	if sum <= 0 || sum > wall {
		t.Fatalf("blocks took %v of a %v pass", sum, wall)
	}
	m.UNet.SetBlockTimer(nil)
	m.SG.SetBlockTimer(nil)
	clear(seen)
	pass()
	if len(seen) != 0 {
		t.Fatalf("timer switched off still heard %v", seen)
	}
}
