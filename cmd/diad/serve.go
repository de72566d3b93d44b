package main

import (
	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/server"
)

func newServeCmd() *cobra.Command {
	cfg := server.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Start the diad server (REST API, websockets, browser client)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return server.New(cfg, newLogger()).Run(cmd.Context(), nil)
		},
	}
	cmd.Flags().StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address (loopback by default)")
	return cmd
}
