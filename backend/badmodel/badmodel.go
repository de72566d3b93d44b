// Package badmodel writes checkpoints that pass every check diad makes before
// libtorch sees them but fail inside libtorch, for the tests of the error
// boundary (torchrt.Do): the CLI, server jobs and the denoise websocket must
// report libtorch's message and go on.
package badmodel

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/model"
)

// Giant writes a checkpoint whose config is the tiny preset with 2^22 UNet
// channels: valid by every rule, but its first UNet layer alone would need
// 2^48 bytes, which no machine's address space holds, so libtorch's
// allocator refuses it (whatever the kernel's overcommit setting). It holds
// no tensors: building the model fails before any would be read.
func Giant(path string) error {
	c := model.TinyConfig()
	c.UNet.ModelChannels = 1 << 22
	if err := c.Validate(); err != nil {
		return fmt.Errorf("badmodel: the giant config must pass validation: %w", err)
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	meta := map[string]string{model.MetaFormat: model.FormatVersion, model.MetaConfig: string(b), model.MetaPreset: c.Preset}
	return checkpoint.Save(path, nil, meta)
}

// AllocationError is a fragment of libtorch's message for the refusal.
const AllocationError = "can't allocate memory"
