package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/deepsim/deepsim/runner"
)

const dataUse = "usage: runner data check [--json] SOURCE...\n" +
	"       runner data shard --out DIR [--per-shard 1000] SOURCE...\n" +
	"check decodes every image and prints the counts, the size distribution and the bad files;\n" +
	"shard copies the images into WebDataset tar shards (train with --data 'DIR/shard-{000000..N}.tar')."

func cmdData(ctx context.Context, args []string, log *slog.Logger, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "check" && args[0] != "shard") {
		fmt.Fprintln(stderr, dataUse)
		return errUsage
	}
	fs := flag.NewFlagSet("data "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "check: print the report as JSON")
	out := fs.String("out", "", "shard: the folder the shards go to")
	per := fs.Int("per-shard", 1000, "shard: images per shard")
	if err := fs.Parse(args[1:]); err != nil {
		return usageErr(err)
	}
	if fs.NArg() == 0 || (args[0] == "shard" && *out == "") {
		fmt.Fprintln(stderr, dataUse)
		return errUsage
	}
	if args[0] == "shard" {
		pattern, err := runner.WriteShards(ctx, runner.ShardOptions{Data: fs.Args(), Out: *out, PerShard: *per, Log: log})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "--data '%s'\n", pattern)
		return nil
	}
	rep, err := runner.CheckData(ctx, fs.Args(), log)
	if err != nil {
		return err
	}
	if *asJSON {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	fmt.Fprint(stdout, rep.String())
	return nil
}
