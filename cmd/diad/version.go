package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/backend/version"
)

// buildReport is what `diad version` prints: enough to tell which libtorch a
// binary runs on and which devices it sees.
type buildReport struct {
	version.Info
	Libtorch string   `json:"libtorch"`
	Devices  []string `json:"devices"`
	Threads  int      `json:"threads"`
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print diad, gotch and libtorch versions and the available devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := buildReport{Info: version.Read(), Libtorch: torchrt.LibtorchVersion(),
				Devices: torchrt.Devices(), Threads: torchrt.Threads()}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			rev := r.Revision
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if r.Modified {
				rev += "+dirty"
			}
			fmt.Fprintf(out, "diad      %s %s\n", r.Diad, rev)
			fmt.Fprintf(out, "go        %s\n", r.Go)
			fmt.Fprintf(out, "gotch     %s\n", r.Gotch)
			fmt.Fprintf(out, "libtorch  %s\n", r.Libtorch)
			fmt.Fprintf(out, "devices   %s\n", strings.Join(r.Devices, ", "))
			fmt.Fprintf(out, "threads   %d\n", r.Threads)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
