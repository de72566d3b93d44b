package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/datasets/debpkg"
)

// addDataFlags binds a dataset source's flags.
func addDataFlags(cmd *cobra.Command, s *datasets.Source) {
	cmd.Flags().StringVar(&s.Root, "data", s.Root, "dataset root folder")
	cmd.Flags().StringVar(&s.Layout, "layout", "auto", "dataset layout: mvtec, visa, mvtec3d, folder or auto")
	cmd.Flags().StringSliceVar(&s.Categories, "categories", s.Categories, "categories to use (default: all, one multi-class model)")
	cmd.Flags().StringVar(&s.CSV, "csv", s.CSV, "VisA split file (default <data>/split_csv/1cls.csv)")
	cmd.Flags().IntVar(&s.Workers, "workers", s.Workers, "image decoding goroutines (0 = CPUs)")
}

func newSynthCmd() *cobra.Command {
	cfg := datasets.DefaultSynth
	var out string
	cmd := &cobra.Command{
		Use:   "synth",
		Short: "Generate the synthetic MVTec-layout dataset (textures and parts with exact defect masks)",
		Long: "synth writes a deterministic dataset in MVTec-AD layout: categories " + strings.Join(datasets.SynthCategories(), ", ") + ",\n" +
			"good images that vary in lighting, pose and noise, and defects (scratch, crack, hole, stain,\n" +
			"colour shift, missing piece, misplacement) with exact pixel masks.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			ix, err := datasets.Synthesize(out, cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d images in %d categories to %s (train %d, test %d)\n",
				len(ix.Samples), len(ix.Categories), out, len(ix.Select(datasets.Train)), len(ix.Select(datasets.Test)))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "output folder")
	addSetFlags(f, &cfg.Seed, &cfg.Size, &cfg.Train, &cfg.TestGood, &cfg.PerDefect, &cfg.Categories)
	return cmd
}

func newPhotosCmd() *cobra.Command {
	cfg := datasets.DefaultPhotoSet
	var out, cache, mirror string
	cmd := &cobra.Command{
		Use:   "photos",
		Short: "Build the photo set: real photographs from a Debian package, with painted defects and exact masks",
		Long: "photos downloads " + datasets.PhotoPackage.Name + " " + datasets.PhotoPackage.Version + " from a Debian mirror (checked against its SHA-256;\n" +
			"only the photographs and the licence file are kept, under --cache) and writes an MVTec-AD layout set:\n" +
			"categories " + strings.Join(datasets.PhotoCategories(), ", ") + " (surfaces are crops of one photograph,\n" +
			"parts are the whole photograph slightly shifted), good images, and defects painted on the photographs\n" +
			"(surfaces: " + strings.Join(datasets.PhotoTextureDefects, ", ") + "; parts: " + strings.Join(datasets.PhotoObjectDefects, ", ") + ")\n" +
			"with exact masks. " + datasets.PhotoSourcesFile + " in the set names each photograph's package, path and licence.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			pkg := filepath.Join(cache, datasets.PhotoPackage.Name)
			url := strings.TrimSuffix(mirror, "/") + "/" + datasets.PhotoPackage.Filename
			if err := debpkg.Fetch(cmd.Context(), url, datasets.PhotoPackage.SHA256, datasets.PhotoPackageFiles(), pkg); err != nil {
				return err
			}
			ix, err := datasets.BuildPhotoSet(out, pkg, cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d images in %d categories to %s (train %d, test %d); sources and licences in %s\n",
				len(ix.Samples), len(ix.Categories), out, len(ix.Select(datasets.Train)), len(ix.Select(datasets.Test)), filepath.Join(out, datasets.PhotoSourcesFile))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "output folder")
	f.StringVar(&cache, "cache", ".cache/photos", "where the package's photographs are kept between runs")
	f.StringVar(&mirror, "mirror", envOr("DIAD_DEBIAN_MIRROR", "http://deb.debian.org/debian"), "Debian mirror (or $DIAD_DEBIAN_MIRROR)")
	addSetFlags(f, &cfg.Seed, &cfg.Size, &cfg.Train, &cfg.TestGood, &cfg.PerDefect, &cfg.Categories)
	return cmd
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// addSetFlags binds the flags a generated set shares (diad synth, diad photos).
func addSetFlags(f *pflag.FlagSet, seed *uint64, size, train, testGood, perDefect *int, categories *[]string) {
	f.Uint64Var(seed, "seed", *seed, "random seed (same seed, same files)")
	f.IntVar(size, "size", *size, "image side in pixels")
	f.IntVar(train, "train", *train, "good training images per category")
	f.IntVar(testGood, "test-good", *testGood, "good test images per category")
	f.IntVar(perDefect, "per-defect", *perDefect, "test images per defect type")
	f.StringSliceVar(categories, "categories", nil, "categories (default all)")
}
