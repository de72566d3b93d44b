package main

import (
	"image/gif"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// diad trajectory draws the steps of the reconstruction diad predict
// scores: a GIF with a frame per step, a strip with the chosen rows, and
// the same final score as predict with the same seed.
func TestTrajectoryDrawsWhatPredictScores(t *testing.T) {
	dir, data, ckpt := shardFixture(t)
	img := filepath.Join(data, "woven", "test", "good", "000.png")
	g, s := filepath.Join(dir, "out", "t.gif"), filepath.Join(dir, "out", "t.png")
	common := []string{"--checkpoint", ckpt, "--scorer", "pixel", "--device", "cpu", "--steps", "3", "--seed", "3"}
	out, err := runCLI(t, append([]string{"trajectory", "--gif", g, "--strip", s, "--panels", "input,latent,image,map", "--strip-steps", "1,3", "--side", "48"}, append(common, img)...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	f, err := os.Open(g)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	anim, err := gif.DecodeAll(f)
	if err != nil || len(anim.Image) != 3 {
		t.Fatalf("GIF: %v, %d frames, want 3", err, len(anim.Image))
	}
	sf, err := os.Open(s)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	strip, err := png.Decode(sf)
	if err != nil {
		t.Fatal(err)
	}
	// Two rows of the GIF's frame height (plus the title once).
	if fw, sw := anim.Config.Width, strip.Bounds().Dx(); fw != sw || strip.Bounds().Dy() <= anim.Config.Height {
		t.Fatalf("strip %v beside GIF frames of %dx%d", strip.Bounds(), anim.Config.Width, anim.Config.Height)
	}
	score := regexp.MustCompile(`final score (\S+)`).FindStringSubmatch(out)
	if score == nil {
		t.Fatalf("no final score in\n%s", out)
	}
	pred, err := runCLI(t, append([]string{"predict", "--threshold", "0.5"}, append(common, img)...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, pred)
	}
	if !strings.Contains(pred, "score "+score[1]+" ") {
		t.Fatalf("trajectory's final score %s not predict's:\n%s", score[1], pred)
	}
	for _, bad := range [][]string{
		{"trajectory", "--checkpoint", ckpt, img},
		{"trajectory", "--checkpoint", ckpt, "--gif", g, "--panels", "noise", img},
		{"trajectory", "--checkpoint", ckpt, "--gif", g, "--threshold", "-1", img},
		{"trajectory", "--checkpoint", ckpt, "--gif", g, "--device", "cpu", filepath.Join(dir, "absent.png")},
		{"trajectory", "--checkpoint", ckpt, "--strip", s, "--device", "cpu", "--steps", "3", "--strip-steps", "4", img},
	} {
		if out, err := runCLI(t, bad...); err == nil {
			t.Errorf("%v accepted:\n%s", bad, out)
		}
	}
}
