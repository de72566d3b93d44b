package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/torchrt"
)

func newConvertCmd() *cobra.Command {
	var half bool
	cmd := &cobra.Command{
		Use:   "convert IN.safetensors OUT.safetensors",
		Short: "Copy a model checkpoint, optionally storing its tensors as float16 (half the size)",
		Long: "convert copies every tensor and the metadata of a diad checkpoint. With --half the tensors are\n" +
			"stored as float16; diad loads them back as float32. The committed demo model is made this way.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			defer torchrt.Pin()()
			r, err := checkpoint.Open(args[0])
			if err != nil {
				return err
			}
			defer r.Close()
			tensors := map[string]*ts.Tensor{}
			defer func() {
				for _, t := range tensors {
					t.MustDrop()
				}
			}()
			for _, e := range r.Entries() {
				t, err := r.Load(e.Name, gotch.CPU)
				if err != nil {
					return err
				}
				tensors[e.Name] = t
			}
			meta := map[string]string{}
			for k, v := range r.Metadata() {
				meta[k] = v
			}
			save := checkpoint.Save
			if half {
				save = checkpoint.SaveHalf
				meta["diad.dtype"] = "float16"
			}
			if err := save(args[1], tensors, meta); err != nil {
				return err
			}
			st, err := os.Stat(args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d tensors, %.1f MB\n", args[1], len(tensors), float64(st.Size())/1e6)
			return nil
		},
	}
	cmd.Flags().BoolVar(&half, "half", false, "store tensors as float16")
	return cmd
}
