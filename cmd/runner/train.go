package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/launch"
	"github.com/deepsim/deepsim/pretrained"
	"github.com/deepsim/deepsim/runner"
)

// latentFlag is the code's channel count, written CxHxW or C. The encoder
// always downsamples a training crop to 8 x 8.
type latentFlag int

func (l *latentFlag) String() string { return fmt.Sprintf("%dx8x8", int(*l)) }

func (l *latentFlag) Set(v string) error {
	c, hw, shaped := strings.Cut(v, "x")
	if shaped && hw != "8x8" {
		return fmt.Errorf("latent %q: the code is C x 8 x 8 at the training size", v)
	}
	n, err := strconv.Atoi(c)
	if err != nil || n < 1 {
		return fmt.Errorf("latent %q: want CxHxW (like 8x8x8) or a channel count", v)
	}
	*l = latentFlag(n)
	return nil
}

// invocation holds the train flags that are not the run's configuration.
type invocation struct {
	out           string
	resume, paper bool
	nproc         int
	restarts      int
	timeout       time.Duration
}

// bindTrainFlags binds cfg's fields to fs, so that the flags' defaults are
// cfg's values.
func bindTrainFlags(fs *flag.FlagSet, cfg *runner.Config, inv *invocation) {
	out, resume, paper := &inv.out, &inv.resume, &inv.paper
	fs.StringVar(&cfg.Task, "task", cfg.Task, "what to train: autoencoder, vae, inversion (of --target's features), or comparator (an Exemplar-CNN)")
	fs.Var((*listFlag)(&cfg.Data), "data", "training images: folders, WebDataset .tar shards, lists of paths, globs or brace ranges; comma-separated or repeated")
	fs.Var((*listFlag)(&cfg.Heldout), "heldout", "folder(s) of held-out images for the report's crops, the held-back curve (--eval-every) and the final eval")
	fs.StringVar(out, "out", "", "run folder to create (or to continue, with --resume)")
	fs.StringVar(&cfg.Init, "init", cfg.Init, "a new run starts from E's and G's weights of this run or shipped run (pretrained:autoencoder); D and the optimisers start afresh")
	fs.BoolVar(resume, "resume", false, "continue the run in --out from its checkpoint")
	fs.Int64Var(&cfg.Steps, "steps", cfg.Steps, "train until this step")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "crops per step")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "crop side in pixels (16, 32, 64, 128, 256)")
	fs.Var((*latentFlag)(&cfg.CodeChannels), "latent", "code (VAE: latent) shape CxHxW, or just C; H and W are always 8")
	fs.StringVar(&cfg.Layout, "layout", cfg.Layout, "memory layout of the networks: channels-last or nchw (speed only; which is faster depends on the CPU: make bench-peer)")
	fs.StringVar(&cfg.Precision, "precision", cfg.Precision, "float32; bf16 (bfloat16 autocast of the forward passes, where the CPU has it); or float64 (slow: for checking runs step by step)")
	fs.StringVar(&cfg.Upsample, "upsample", cfg.Upsample, "generator upsampling: resize (nearest + 3x3 conv, no checkerboard) or deconv (transposed conv, the paper's)")
	fs.Float64Var(&cfg.KLWeight, "kl-weight", cfg.KLWeight, "VAE: weight of the KL term (nats per image)")
	fs.StringVar(&cfg.AdvWeight, "adv-weight", cfg.AdvWeight, "how the adversarial term is weighed: fixed (--lambda-adv) or adaptive (VQGAN: --lambda-adv times the ratio of the reconstruction's and the adversarial term's gradient norms at G's output layer)")
	fs.StringVar(&cfg.Discriminator, "discriminator", cfg.Discriminator, "D of the autoencoder and the VAE: image (the paper's, one judgement per crop) or patch (PatchGAN: one per 26 px patch)")
	fs.Int64Var(&cfg.DWarmup, "d-warmup", cfg.DWarmup, "steps before D starts: until then it neither learns nor judges G")
	fs.Int64Var(&cfg.KLWarmup, "kl-warmup", cfg.KLWarmup, "VAE: steps over which the KL weight rises linearly from 0")
	fs.StringVar(&cfg.Comparator, "comparator", cfg.Comparator, "comparator C: NAME:LAYER, ARCH-random:LAYER or FILE.pt[:SUBMODULE] (autoencoder and VAE: "+runner.TrainedComparator+" where make models has imported it)")
	fs.StringVar(&cfg.Layer, "layer", cfg.Layer, "comparator layer, when --comparator names none; for an inversion, the target's layer to invert")
	fs.StringVar(&cfg.Target, "target", cfg.Target, "inversion: the network whose features G inverts (a comparator spec, e.g. mobilenetv2 or alexnet)")
	fs.IntVar(&cfg.TargetSize, "target-size", cfg.TargetSize, "inversion: side the target sees the images at (0: --size)")
	fs.BoolVar(paper, "paper-weights", false, "inversion: the paper's loss weights, rescaled to this project's terms (instead of the --lambda-* flags)")
	fs.IntVar(&cfg.ComparatorSize, "comparator-size", cfg.ComparatorSize, "side the comparator resizes its input to (0: its own; -1: the crops', which the default MobileNetV2 uses)")
	fs.IntVar(&cfg.Classes, "classes", cfg.Classes, "surrogate classes (comparator task)")
	for i, t := range runner.LossTerms {
		fs.Float64Var(&cfg.Weights[i], strings.ReplaceAll(t.Key(), "_", "-"), cfg.Weights[i], t.Help)
	}
	fs.Float64Var(&cfg.LR, "lr", cfg.LR, "Adam learning rate")
	fs.Float64Var(&cfg.LRD, "lr-d", cfg.LRD, "D's Adam learning rate (0: --lr); a D that learns faster than G, as in TTUR")
	fs.Int64Var(&cfg.LRDecay, "lr-decay", cfg.LRDecay, "over the run's last N steps every learning rate falls linearly towards 0 (0: constant; not given, a new autoencoder run takes a fifth of --steps, the default's shown)")
	fs.Float64Var(&cfg.Beta1, "beta1", cfg.Beta1, "Adam's first-moment decay, G's and D's (GANs often use 0.5)")
	fs.Float64Var(&cfg.Beta2, "beta2", cfg.Beta2, "Adam's second-moment decay, G's and D's")
	fs.Float64Var(&cfg.WeightDecay, "weight-decay", cfg.WeightDecay, "L2 weight decay, added to G's and D's gradients as the paper's Caffe did")
	fs.Float64Var(&cfg.EMA, "ema", cfg.EMA, "decay of a moving average of E's and G's weights, which reconstructions, eval and samples use (0: none; GANs often use 0.999)")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "seed for initialisation and data order")
	fs.IntVar(&cfg.Threads, "threads", cfg.Threads, "libtorch threads (0: one per core)")
	fs.IntVar(&cfg.CacheMB, "cache-mb", cfg.CacheMB, "MiB of decoded images kept for reuse when the whole set fits (0: none; the default photos fit in the default)")
	fs.Int64Var(&cfg.LogEvery, "log-every", cfg.LogEvery, "write metrics every N steps")
	fs.Int64Var(&cfg.CheckpointEvery, "checkpoint-every", cfg.CheckpointEvery, "save a checkpoint every N steps")
	fs.Int64Var(&cfg.EvalEvery, "eval-every", cfg.EvalEvery, "evaluate the held-out images every N steps and at the end: a generator's held-back curve in heldout.jsonl (with --heldout; 0: none), the comparator's surrogate-class accuracy")
	fs.IntVar(&inv.nproc, "nproc", 1, "data-parallel: start N processes on this machine, --threads split among them")
	fs.DurationVar(&inv.timeout, "dist-timeout", runner.DefaultGroupTimeout, "data-parallel: how long a rank waits for the others, at the start and in each step")
	fs.IntVar(&inv.restarts, "max-restarts", 0, "data-parallel (--nproc): when a process dies or hangs, stop the group and start all again from the last checkpoint, up to N times (torchrun's flag)")
}

// configKey is the config.json key a train flag sets: its name with
// underscores, but for --latent.
func configKey(flag string) string {
	if flag == "latent" {
		return "code_channels"
	}
	return strings.ReplaceAll(flag, "-", "_")
}

// given tells whether the named flag was given.
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// taskOf finds --task in args, so that flags default to the task's values.
func taskOf(args []string) string {
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "task" && strings.HasPrefix(a, "-") {
			if hasVal {
				return val
			}
			if i+1 < len(args) {
				return args[i+1]
			}
		}
	}
	return runner.TaskAutoencoder
}

func cmdTrain(ctx context.Context, args []string, log *slog.Logger, stderr io.Writer) error {
	cfg := runner.DefaultsFor(taskOf(args))
	var inv invocation
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bindTrainFlags(fs, &cfg, &inv)
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, fs.Args())
	}
	if inv.out == "" {
		fmt.Fprintln(stderr, "runner train: --out is required")
		return errUsage
	}
	if inv.timeout <= 0 {
		return fmt.Errorf("%w: --dist-timeout must be positive", errUsage)
	}
	env, distributed, err := launch.FromEnv(os.Getenv)
	if err != nil {
		return fmt.Errorf("data-parallel environment: %w", err)
	}
	switch {
	case inv.nproc < 1:
		return fmt.Errorf("%w: --nproc %d", errUsage, inv.nproc)
	case inv.nproc > 1 && distributed:
		return fmt.Errorf("%w: --nproc starts its own processes; under torchrun or another launcher leave it out", errUsage)
	case inv.restarts < 0:
		return fmt.Errorf("%w: --max-restarts %d", errUsage, inv.restarts)
	case inv.restarts > 0 && inv.nproc < 2:
		return fmt.Errorf("%w: --max-restarts restarts the processes --nproc starts; under torchrun use its own --max-restarts", errUsage)
	case inv.nproc > 1:
		return launchLocal(ctx, inv, cfg.Threads, args, log, stderr)
	case !distributed:
		return train(ctx, cfg, inv, fs, args, nil, log, stderr)
	}

	log = log.With("rank", env.Rank)
	// torchrun restarting the group after a failure: go on from the run
	// folder's checkpoint, as the run that failed would have.
	if env.Restart > 0 && !inv.resume && runner.HasCheckpoint(inv.out) {
		log.Info("restarted by the launcher: resuming", "restart", env.Restart)
		inv.resume = true
	}
	group, err := runner.JoinGroup(env, inv.timeout)
	if err != nil {
		return err
	}
	defer group.Close()
	log.Info("joined the group", "world_size", env.WorldSize)
	return train(ctx, cfg, inv, fs, args, group, log, stderr)
}

// launchLocal runs this command as inv.nproc processes of one group, and
// when one of them fails starts them all again from the run's last
// checkpoint, up to inv.restarts times.
func launchLocal(ctx context.Context, inv invocation, threads int, args []string, log *slog.Logger, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	n := inv.nproc
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	each := max(1, threads/n)
	log.Info("starting processes", "nproc", n, "threads_each", each)
	// The later flags win: each process is one rank with its share of the
	// threads.
	argv := append([]string{"train"}, args...)
	argv = append(argv, "--nproc=1", "--max-restarts=0", "--threads="+strconv.Itoa(each))
	for restart := 0; ; restart++ {
		err := launch.Local(ctx, n, exe, argv, stderr)
		var failed *launch.ExitError
		if !errors.As(err, &failed) || ctx.Err() != nil || restart == inv.restarts {
			if restart > 0 && err != nil {
				return fmt.Errorf("after %d restart(s): %w", restart, err)
			}
			return err
		}
		log.Warn("a process failed: restarting the group from the last checkpoint",
			"restart", restart+1, "of", inv.restarts, "reason", failed.Error())
		if runner.HasCheckpoint(inv.out) {
			if !slices.Contains(argv, "--resume") {
				argv = append(argv, "--resume")
			}
		} else if err := runner.DiscardUnsaved(inv.out); err != nil {
			return err
		}
	}
}

// train resolves the run's configuration and trains it.
func train(ctx context.Context, cfg runner.Config, inv invocation, fs *flag.FlagSet, args []string,
	group *graphs.Group, log *slog.Logger, stderr io.Writer) error {
	store := pretrained.NewStore(pretrained.DefaultHome())
	keys := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { keys[configKey(f.Name)] = true })
	if inv.paper {
		weighted := false
		for _, t := range runner.LossTerms {
			weighted = weighted || keys[t.Key()]
		}
		if !cfg.Inverts() || weighted {
			return fmt.Errorf("%w: --paper-weights is for --task inversion, without --lambda-*", errUsage)
		}
	}
	req := runner.Request{Out: inv.out, Resume: inv.resume, PaperWeights: inv.paper,
		Given: func(key string) bool { return keys[key] }}
	cfg, err := runner.Resolve(cfg, req, store, group, log)
	if err != nil {
		return err
	}
	sum, err := runner.Train(ctx, cfg, runner.TrainOptions{Out: inv.out, Resume: inv.resume, Store: store, Log: log, Progress: stderr, Group: group})
	if sum != nil && len(sum.Skipped) > 0 {
		log.Warn("some files were skipped", "skipped", len(sum.Skipped), "used", sum.Images)
	}
	if err == nil {
		log.Info("training done", "run", inv.out, "step", sum.Step)
	}
	return err
}
