package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/results"
)

func newExportCmd() *cobra.Command {
	var root, table, format, out string
	cmd := &cobra.Command{
		Use:   "export RUN-ID",
		Short: "Export a results run's images or metrics as CSV or JSON lines",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store := results.Store{Root: root}
			w := cmd.OutOrStdout()
			if out != "" && out != "-" {
				f, err := os.Create(out)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			return export(w, store, args[0], table, format)
		},
	}
	cmd.Flags().StringVar(&root, "results", "results/runs", "results folder")
	cmd.Flags().StringVar(&table, "table", "images", "images, metrics or history (every change of an analyst label)")
	cmd.Flags().StringVar(&format, "format", "csv", "csv or json (JSON lines)")
	cmd.Flags().StringVarP(&out, "out", "o", "", "output file (default stdout)")
	return cmd
}

func export(w io.Writer, store results.Store, runID, table, format string) error {
	switch table {
	case "images":
		rows, err := store.Images(runID)
		if err != nil {
			return err
		}
		return results.ExportImages(w, rows, format)
	case "metrics":
		rows, err := store.Metrics(runID)
		if err != nil {
			return err
		}
		return results.ExportMetrics(w, rows, format)
	case "history":
		rows, err := store.LabelHistory(runID)
		if err != nil {
			return err
		}
		return results.ExportHistory(w, rows, format)
	}
	return fmt.Errorf("--table %q: want images, metrics or history", table)
}
