// Command runner trains image generators with deep perceptual similarity
// (DeePSiM) losses and uses them. It parses flags and wires packages; the
// work is done in runner/, pipeline/ and graphs/.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/deepsim/deepsim/pretrained"
	"github.com/deepsim/deepsim/runner"
)

const usage = `runner trains and uses DeePSiM image generators.

Commands:
  runner train --task autoencoder|vae|comparator --data DIR --out RUN [flags]
  runner train --task inversion --target SPEC --layer L --data DIR --out RUN [flags]
  runner reconstruct --run RUN --out DIR IMAGE_OR_DIR...
  runner reconstruct --run RUN --out DIR --features FILE.npy   (inversion runs)
  runner features --target SPEC --layer L --out FILE.npy [--size 64] IMAGE_OR_DIR...
  runner sample --run RUN --n N --out FILE.png|DIR [--seed S] [--ref DIR]
  runner sample --run RUN --interpolate A B --steps K --out FILE.png|DIR
  runner eval --run RUN --data DIR [--json] [--n 256] [--seed 1] [--judge SPEC] [--judge-size PX]
  runner similarity A B [--comparator SPEC | --judge SPEC] [--json] [--map OUT.png]
  runner ablate --data DIR --heldout DIR --steps N --out DIR [flags]
  runner report --out FILE.html [--png PREFIX] RUN...   (the runs' held-back curves on one chart)
  runner comparator import FILE --as NAME [--arch alexnet|vgg16|exemplar]
  runner comparator import MODEL.tgz|MODEL_DIR --as NAME [--model PATH] [--input 0,1|-1,1|imagenet]
  runner comparator list
  runner crops --data DIR --out DIR [--n 8] [--size 128] [--seed 1]
  runner data check [--json] SOURCE...
  runner data shard --out DIR [--per-shard 1000] SOURCE...

DIR, SOURCE: a folder, an image, a WebDataset .tar shard, a text file of
paths, or a glob or brace range of those ('shards/train-{000000..000146}.tar').

Run "runner COMMAND -h" for a command's flags.
`

// Exit codes.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitInterrupted = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal a second one kills at once.
	go func() { <-ctx.Done(); stop() }()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	var err error
	switch args[0] {
	case "train":
		err = cmdTrain(ctx, args[1:], log, stderr)
	case "reconstruct":
		err = cmdReconstruct(ctx, args[1:], log, stderr)
	case "features":
		err = cmdFeatures(ctx, args[1:], log, stdout, stderr)
	case "sample":
		err = cmdSample(ctx, args[1:], log, stdout, stderr)
	case "crops":
		err = cmdCrops(ctx, args[1:], log, stderr)
	case "eval":
		err = cmdEval(ctx, args[1:], log, stdout, stderr)
	case "ablate":
		err = cmdAblate(ctx, args[1:], log, stdout, stderr)
	case "similarity":
		err = cmdSimilarity(ctx, args[1:], log, stdout, stderr)
	case "comparator":
		err = cmdComparator(ctx, args[1:], stdout, stderr)
	case "data":
		err = cmdData(ctx, args[1:], log, stdout, stderr)
	case "report":
		err = cmdReport(args[1:], stderr)
	default:
		fmt.Fprintf(stderr, "runner: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		return exitUsage
	case errors.Is(err, runner.ErrInterrupted) || errors.Is(err, context.Canceled):
		fmt.Fprintf(stderr, "runner %s: interrupted\n", args[0])
		return exitInterrupted
	}
	fmt.Fprintf(stderr, "runner %s: %v\n", args[0], err)
	return exitError
}

// errUsage marks a command line that cannot work: exit status 2.
var errUsage = errors.New("usage")

// listFlag is a repeatable, comma-separated list flag. Commas inside
// braces belong to a brace pattern ({a,b}), not to the list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	depth, start := 0, 0
	add := func(s string) {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	for i, r := range v {
		switch {
		case r == '{':
			depth++
		case r == '}' && depth > 0:
			depth--
		case r == ',' && depth == 0:
			add(v[start:i])
			start = i + 1
		}
	}
	add(v[start:])
	return nil
}

func cmdReconstruct(ctx context.Context, args []string, log *slog.Logger, stderr io.Writer) error {
	var opt runner.ReconstructOptions
	fs := flag.NewFlagSet("reconstruct", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opt.Run, "run", "", "trained run folder")
	fs.StringVar(&opt.Out, "out", "", "folder for the reconstructions and grid.png")
	fs.StringVar(&opt.Features, "features", "", "inversion runs: invert the features in this .npy file (from runner features)")
	inputs, err := parseInterleaved(fs, args)
	if err != nil {
		return usageErr(err)
	}
	opt.Inputs, opt.Log = inputs, log
	opt.Store = pretrained.NewStore(pretrained.DefaultHome())
	if opt.Run == "" || opt.Out == "" || (len(opt.Inputs) == 0 && opt.Features == "") {
		fmt.Fprintln(stderr, "usage: runner reconstruct --run RUN --out DIR IMAGE_OR_DIR...\n"+
			"       runner reconstruct --run RUN --out DIR --features FILE.npy")
		return errUsage
	}
	sum, err := runner.Reconstruct(ctx, opt)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %d reconstructions to %s (skipped %d); grid: %s\n", len(sum.Written), opt.Out, len(sum.Skipped), sum.Grid)
	return nil
}

func cmdFeatures(ctx context.Context, args []string, log *slog.Logger, stdout, stderr io.Writer) error {
	const use = "usage: runner features --target SPEC --layer L --out FILE.npy [--size 64] [--target-size PX] IMAGE_OR_DIR...\n" +
		"       runner features --run INVERSION_RUN --out FILE.npy IMAGE_OR_DIR..."
	opt := runner.FeaturesOptions{Size: 64, Log: log, Store: pretrained.NewStore(pretrained.DefaultHome())}
	var run, layer string
	fs := flag.NewFlagSet("features", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opt.Target, "target", "", "the network (a comparator spec)")
	fs.StringVar(&layer, "layer", "", "its layer, when --target names none")
	fs.StringVar(&run, "run", "", "take the target, layer and sizes from this inversion run")
	fs.StringVar(&opt.Out, "out", "", "the .npy file to write: float32 (N, C, H, W)")
	fs.IntVar(&opt.Size, "size", opt.Size, "side images are centre-cropped and resized to")
	fs.IntVar(&opt.TargetSize, "target-size", 0, "side the target sees them at (0: --size)")
	inputs, err := parseInterleaved(fs, args)
	if err != nil {
		return usageErr(err)
	}
	if run != "" {
		cfg, err := runner.LoadConfig(run)
		if err != nil {
			return err
		}
		if !cfg.Inverts() {
			return fmt.Errorf("%s is a %s run, not an inversion", run, cfg.Task)
		}
		opt.Target, opt.Size, opt.TargetSize = cfg.TargetSpec(), cfg.Size, cfg.TargetSize
	} else if layer != "" && !strings.Contains(opt.Target, ":") {
		opt.Target += ":" + layer
	}
	if opt.Target == "" || opt.Out == "" || len(inputs) == 0 {
		fmt.Fprintln(stderr, use)
		return errUsage
	}
	opt.Inputs = inputs
	files, err := runner.Features(ctx, opt)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote the %s features of %d images to %s, in this order:\n", opt.Target, len(files), opt.Out)
	for i, f := range files {
		fmt.Fprintf(stdout, "%d\t%s\n", i, f)
	}
	return nil
}

func cmdSample(ctx context.Context, args []string, log *slog.Logger, stdout, stderr io.Writer) error {
	const use = "usage: runner sample --run RUN --n N --out FILE.png|DIR [--seed S] [--ref DIR]\n" +
		"       runner sample --run RUN --interpolate A B --steps K --out FILE.png|DIR"
	opt := runner.SampleOptions{N: 64, Seed: 1, Steps: 8, Log: log, Store: pretrained.NewStore(pretrained.DefaultHome())}
	fs := flag.NewFlagSet("sample", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opt.Run, "run", "", "trained VAE run folder")
	fs.StringVar(&opt.Out, "out", "", "a .png file for one sheet, or a folder for 000.png, 001.png, ...")
	fs.IntVar(&opt.N, "n", opt.N, "samples to draw from the prior")
	fs.Uint64Var(&opt.Seed, "seed", opt.Seed, "seed of the latents: the same seed gives the same images")
	interp := fs.Bool("interpolate", false, "decode a row between the encodings of the two images given")
	fs.IntVar(&opt.Steps, "steps", opt.Steps, "images in the interpolation row, both ends included")
	fs.StringVar(&opt.Ref, "ref", "", "folder of real images: measure the samples against as many seeded crops of it (sharpness ratio, grid ratio, KID, FID)")
	fs.StringVar(&opt.Judge, "judge", runner.SampleJudge, "with --ref: the network whose features KID and FID compare")
	asJSON := fs.Bool("json", false, "with --ref: print the measures as one JSON object")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return usageErr(err)
	}
	if *interp {
		opt.Interpolate = pos
		if len(pos) != 2 {
			fmt.Fprintf(stderr, "runner sample: --interpolate takes two images, got %d\n%s\n", len(pos), use)
			return errUsage
		}
	} else if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, pos)
	}
	if opt.Run == "" || opt.Out == "" {
		fmt.Fprintln(stderr, use)
		return errUsage
	}
	res, err := runner.Sample(ctx, opt)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %d file(s) to %s\n", len(res.Written), opt.Out)
	switch {
	case opt.Ref == "":
	case *asJSON:
		return json.NewEncoder(stdout).Encode(res)
	default:
		fmt.Fprintf(stdout, "%d samples against %d crops of %s, features of %s:\n", res.Samples, res.RefCrops, opt.Ref, res.Judge)
		fmt.Fprintf(stdout, "sharpness_ratio: %.4f (mean gradient magnitude, samples / crops)\n", res.SharpnessRatio)
		fmt.Fprintf(stdout, "grid_ratio: %.3f (power on the 8 px lattice, samples / crops)\n", res.GridRatio)
		fmt.Fprintf(stdout, "kid: %.5f (std %.5f over %d subsets of %d)\n", res.KID, res.KIDStd, res.KIDSubsets, res.KIDSubset)
		fmt.Fprintf(stdout, "fid: %.3f\n", res.FID)
	}
	return nil
}

func cmdEval(ctx context.Context, args []string, log *slog.Logger, stdout, stderr io.Writer) error {
	opt := runner.EvalOptions{N: 256, Seed: 1, Log: log, Store: pretrained.NewStore(pretrained.DefaultHome())}
	var data listFlag
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opt.Run, "run", "", "trained run folder")
	fs.Var(&data, "data", "folder(s) of held-out images")
	fs.IntVar(&opt.N, "n", opt.N, "number of seeded crops")
	fs.Uint64Var(&opt.Seed, "seed", opt.Seed, "seed of the crops")
	fs.StringVar(&opt.Judge, "judge", "", "independent comparator (default: mobilenetv2, or inceptionv3 for runs that trained with it)")
	fs.IntVar(&opt.JudgeSize, "judge-size", 0, "side the judge sees the crops at (default: their own, or the least the judge takes)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if opt.Run == "" || len(data) == 0 {
		fmt.Fprintln(stderr, "usage: runner eval --run RUN --data DIR [--json] [--n 256] [--seed 1] [--judge SPEC]")
		return errUsage
	}
	opt.Data = data
	res, err := runner.Evaluate(ctx, opt)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		return enc.Encode(res)
	}
	judge := res.Judge
	if res.JudgeSize > 0 {
		judge += fmt.Sprintf(" (at %d px)", res.JudgeSize)
	}
	fmt.Fprintf(stdout, "run: %s\ncrops: %d\ncomparator: %s\njudge: %s\npsnr: %.3f\nssim: %.4f\n"+
		"image_error_pct: %.2f\nfeature_error_pct: %.2f\nfeature_error_independent_pct: %.2f\n"+
		"perceptual_distance: %.4f\nsharpness_ratio: %.3f\ngrid_ratio: %.3f\n",
		res.Run, res.N, res.Comparator, judge, res.PSNR, res.SSIM, res.ImageErrorPct, res.FeatureErrorPct,
		res.FeatureErrorIndependentPct, res.PerceptualDistance, res.SharpnessRatio, res.GridRatio)
	return nil
}

func cmdAblate(ctx context.Context, args []string, log *slog.Logger, stdout, stderr io.Writer) error {
	opt := runner.AblateOptions{Base: runner.DefaultsFor(runner.TaskAutoencoder), N: 256, Log: log, Store: pretrained.NewStore(pretrained.DefaultHome())}
	var heldout listFlag
	fs := flag.NewFlagSet("ablate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var((*listFlag)(&opt.Base.Data), "data", "folder(s) of training images")
	fs.Var(&heldout, "heldout", "folder(s) of held-out images to evaluate on")
	fs.StringVar(&opt.Out, "out", "", "folder for one run per combination, ablation.md and ablation.png")
	fs.Int64Var(&opt.Base.Steps, "steps", 1500, "steps per combination")
	fs.IntVar(&opt.Base.Batch, "batch", opt.Base.Batch, "crops per step")
	fs.IntVar(&opt.Base.Size, "size", opt.Base.Size, "crop side in pixels")
	fs.Int64Var(&opt.Base.Seed, "seed", opt.Base.Seed, "seed, the same for every combination")
	fs.StringVar(&opt.Base.Comparator, "comparator", opt.Base.Comparator, "comparator of the feature loss")
	fs.StringVar(&opt.Base.Upsample, "upsample", opt.Base.Upsample, "generator upsampling: resize or deconv")
	fs.IntVar(&opt.N, "n", opt.N, "held-out crops to evaluate on")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if len(opt.Base.Data) == 0 || len(heldout) == 0 || opt.Out == "" {
		fmt.Fprintln(stderr, "usage: runner ablate --data DIR --heldout DIR --steps N --out DIR")
		return errUsage
	}
	opt.Heldout = heldout
	opt.Base.CheckpointEvery = max(1, opt.Base.Steps/4)
	// The default loss, as runner train resolves it: the trained
	// comparator where the store has it, rates decaying over the last fifth.
	if !given(fs, "comparator") {
		runner.PreferTrainedComparator(&opt.Base, opt.Store)
	}
	opt.Base.LRDecay = opt.Base.Steps / runner.LRDecayShare
	if _, err := runner.Ablate(ctx, opt); err != nil {
		return err
	}
	table, err := os.ReadFile(filepath.Join(opt.Out, runner.AblationTable))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\nwrote %s and %s\n", table, filepath.Join(opt.Out, runner.AblationTable), filepath.Join(opt.Out, runner.AblationImage))
	return nil
}

func cmdSimilarity(ctx context.Context, args []string, log *slog.Logger, stdout, stderr io.Writer) error {
	opt := runner.SimilarityOptions{Comparator: runner.DefaultComparator, Log: log, Store: pretrained.NewStore(pretrained.DefaultHome())}
	fs := flag.NewFlagSet("similarity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opt.Comparator, "comparator", opt.Comparator, "comparator whose features are compared")
	fs.StringVar(&opt.Judge, "judge", "", "report the LPIPS-style perceptual distance under this network instead (e.g. mobilenetv2)")
	fs.StringVar(&opt.Map, "map", "", "write the spatial distance map of two images to this PNG")
	asJSON := fs.Bool("json", false, "print JSON")
	paths, err := parseInterleaved(fs, args)
	if err != nil {
		return usageErr(err)
	}
	if len(paths) != 2 {
		fmt.Fprintln(stderr, "usage: runner similarity A B [--comparator SPEC | --judge SPEC] [--json] [--map OUT.png]")
		return errUsage
	}
	opt.A, opt.B = paths[0], paths[1]
	pairs, err := runner.Similarity(ctx, opt)
	if err != nil {
		return err
	}
	if info, _ := os.Stat(opt.A); *asJSON && info != nil && !info.IsDir() {
		return json.NewEncoder(stdout).Encode(map[string]float64{"distance": *pairs[0].Distance})
	} else if *asJSON {
		return json.NewEncoder(stdout).Encode(pairs)
	}
	for _, p := range pairs {
		if p.Error != "" {
			fmt.Fprintf(stdout, "%s: %s\n", p.Name, p.Error)
		} else {
			fmt.Fprintf(stdout, "%s: %.6g\n", p.Name, *p.Distance)
		}
	}
	return nil
}

func cmdCrops(ctx context.Context, args []string, log *slog.Logger, stderr io.Writer) error {
	opt := runner.CropsOptions{N: 8, Size: 128, MinScale: 0.3, Seed: 1, Log: log}
	var data listFlag
	fs := flag.NewFlagSet("crops", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var(&data, "data", "folder(s) of images")
	fs.StringVar(&opt.Out, "out", "", "folder for crop-000.png, ...")
	fs.IntVar(&opt.N, "n", opt.N, "number of crops")
	fs.IntVar(&opt.Size, "size", opt.Size, "crop side in pixels")
	fs.Uint64Var(&opt.Seed, "seed", opt.Seed, "seed")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if len(data) == 0 || opt.Out == "" {
		fmt.Fprintln(stderr, "usage: runner crops --data DIR --out DIR [--n 8] [--size 128] [--seed 1]")
		return errUsage
	}
	opt.Data = data
	written, err := runner.WriteCrops(ctx, opt)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %d crops to %s\n", len(written), opt.Out)
	return nil
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func cmdComparator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "usage: runner comparator import FILE --as NAME [--arch alexnet|vgg16|exemplar]\n" +
		"       runner comparator import MODEL.tgz|MODEL_DIR|model.json --as NAME [--model PATH] [--input 0,1|-1,1|imagenet]\n" +
		"       runner comparator list"
	if len(args) == 0 {
		fmt.Fprintln(stderr, use)
		return errUsage
	}
	store := pretrained.NewStore(pretrained.DefaultHome())
	switch args[0] {
	case "import":
		fs := flag.NewFlagSet("comparator import", flag.ContinueOnError)
		fs.SetOutput(stderr)
		name := fs.String("as", "", "name to store the weights under (then --comparator NAME:LAYER)")
		arch := fs.String("arch", "", "state dicts: alexnet, vgg16 or exemplar (default: detected from the keys)")
		model := fs.String("model", "", "TF.js tarballs: the model's folder inside it (a suffix of its path is enough)")
		input := fs.String("input", "0,1", "TF.js models: the input range the weights expect: 0,1 (8-bit / 255), -1,1 or imagenet")
		files, err := parseInterleaved(fs, args[1:])
		if err != nil {
			return usageErr(err)
		}
		if len(files) != 1 || *name == "" {
			fmt.Fprintln(stderr, use)
			return errUsage
		}
		var e pretrained.Entry
		if pretrained.IsTFJS(files[0]) {
			e, err = store.ImportTFJS(ctx, files[0], *model, *name, *input)
		} else {
			e, err = store.Import(ctx, files[0], *name, *arch)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "imported %s as %q (%s, %d bytes, sha256 %s)\n", files[0], e.Name, e.Arch, e.Bytes, e.SHA256)
		if e.Arch == pretrained.ArchKeras {
			fmt.Fprintf(stdout, "%d weights; input %dx%d, range %s; default taps %s\n",
				e.Params, e.InputSize, e.InputSize, e.Input, strings.Join(e.Taps, "+"))
		}
		fmt.Fprintf(stdout, "use it as --comparator %s:LAYER, or %s for its default taps\n", e.Name, e.Name)
		return nil
	case "list":
		entries, err := store.List()
		if err != nil {
			return err
		}
		rec, _ := pretrained.ShippedInfo()
		fmt.Fprintf(stdout, "%-16s %-9s %-12s %s\n", "NAME", "ARCH", "SHA256", "SOURCE")
		fmt.Fprintf(stdout, "%-16s %-9s %-12s %s\n", pretrained.Shipped, "exemplar", rec.SHA256[:min(12, len(rec.SHA256))], "shipped with deepsim")
		for _, e := range entries {
			src := e.Source
			if e.Model != "" {
				src += ":" + e.Model
			}
			fmt.Fprintf(stdout, "%-16s %-9s %-12s %s\n", e.Name, e.Arch, e.SHA256[:12], src)
		}
		fmt.Fprintf(stdout, "store: %s\n", store.Home)
		return nil
	}
	fmt.Fprintln(stderr, use)
	return errUsage
}

func usageErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return fmt.Errorf("%w: %v", errUsage, err)
}

func cmdReport(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "the page to write: the runs' held-back curves, one chart per measure")
	png := fs.String("png", "", "also write each chart as PREFIX-MEASURE-X.png")
	runs, err := parseInterleaved(fs, args)
	if err != nil {
		return usageErr(err)
	}
	if *out == "" || len(runs) == 0 {
		fmt.Fprintln(stderr, "usage: runner report --out FILE.html RUN...")
		return errUsage
	}
	if err := runner.CompareRuns(runs, *out, *png); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s: held-back curves of %d run(s)\n", *out, len(runs))
	return nil
}
