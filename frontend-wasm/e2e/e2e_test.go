//go:build !js

package e2e

import (
	"testing"

	"github.com/chromedp/chromedp"
)

func TestX(t *testing.T) { _ = chromedp.NewContext }
