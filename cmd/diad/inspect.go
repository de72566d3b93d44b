package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/model"
)

// inspectReport is what `diad inspect --json` prints.
type inspectReport struct {
	File     string              `json:"file"`
	Tensors  int                 `json:"tensors"`
	Params   int64               `json:"parameters"`
	ByPrefix map[string]int64    `json:"parameters_by_component"`
	Metadata map[string]string   `json:"metadata,omitempty"`
	Presets  []model.PresetMatch `json:"presets"`
	// Context is the cross-attention context the model will use.
	Context string             `json:"context"`
	Entries []checkpoint.Entry `json:"entries,omitempty"`
}

func newInspectCmd() *cobra.Command {
	var asJSON, list bool
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "List a checkpoint's tensors and which model preset it matches",
		Long: "inspect reads a .safetensors, .ckpt or .pth file and reports its tensors, their\n" +
			"parameter counts per DiAD component (autoencoder, UNet, SG network), and how it\n" +
			"compares with each preset (paper, small, tiny): components fully present, and the\n" +
			"numbers of missing, unexpected and mis-shaped tensors.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := checkpoint.Open(args[0])
			if err != nil {
				return err
			}
			defer r.Close()
			rep := inspect(args[0], r, list)
			out := cmd.OutOrStdout()
			if asJSON {
				delete(rep.Metadata, model.MetaConfig) // long YAML; use --list for details
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.print(out, r, list)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&list, "list", false, "list every tensor")
	return cmd
}

// inspect reads a checkpoint's report (its entries too when list is set).
func inspect(file string, r checkpoint.Reader, list bool) inspectReport {
	rep := inspectReport{File: file, ByPrefix: map[string]int64{}, Metadata: r.Metadata()}
	for _, e := range r.Entries() {
		rep.Tensors++
		rep.Params += e.Numel()
		comp := "other"
		for name, prefix := range model.Components {
			if strings.HasPrefix(e.Name, prefix) {
				comp = name
			}
		}
		rep.ByPrefix[comp] += e.Numel()
	}
	rep.Presets = model.MatchPresets(r)
	rep.Context = model.ContextSource(r)
	if list {
		rep.Entries = r.Entries()
	}
	return rep
}

// print writes the report as text.
func (rep inspectReport) print(out io.Writer, r checkpoint.Reader, list bool) error {
	fmt.Fprintf(out, "%s: %d tensors, %.2fM parameters\n", rep.File, rep.Tensors, float64(rep.Params)/1e6)
	comps := make([]string, 0, len(rep.ByPrefix))
	for c := range rep.ByPrefix {
		comps = append(comps, c)
	}
	sort.Strings(comps)
	for _, c := range comps {
		fmt.Fprintf(out, "  %-12s %10.2fM\n", c, float64(rep.ByPrefix[c])/1e6)
	}
	if p := rep.Metadata[model.MetaPreset]; p != "" {
		fmt.Fprintf(out, "written by diad (%s), preset %s\n", rep.Metadata[model.MetaFormat], p)
		if c, err := model.ConfigFromCheckpoint(r); err == nil {
			fmt.Fprintf(out, "sampler: %s from start level %d, %d steps, eta %g\n", c.Sampler.KindOrDefault(), c.Sampler.StartT, c.Sampler.Steps, c.Sampler.Eta)
			if c.Scorer.Kind != "" {
				fmt.Fprintf(out, "scorer without ImageNet weights: %s (calibrated scales %v)\n", c.Scorer.Kind, c.Scorer.Scales)
			}
		}
	}
	fmt.Fprintf(out, "cross-attention context: %s\n", rep.Context)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "preset\tcomponents matched\tmissing\tunexpected\tmis-shaped\t")
	for _, pm := range rep.Presets {
		matched := strings.Join(pm.Matched, ",")
		if matched == "" {
			matched = "-"
		}
		if pm.Exact() {
			matched += " (exact)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t\n", pm.Preset, matched, pm.Missing, pm.Unexpected, pm.Mismatched)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if list {
		for _, e := range rep.Entries {
			fmt.Fprintf(out, "%s\t%s\t%v\n", e.Name, e.DType, e.Shape)
		}
	}
	return nil
}
