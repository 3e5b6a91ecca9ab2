// Command ship writes a trained run's inference form (config.json,
// weights.pt with E and G alone, info.json) into
// pretrained/autoencoders/NAME, where --run pretrained:NAME finds it once
// runner is built again.
//
//	go run ./scripts/ship -run RUN -name NAME -command '...' -data '...'
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/deepsim/deepsim/pretrained"
	"github.com/deepsim/deepsim/runner"
)

func main() {
	run := flag.String("run", "", "the trained run folder")
	name := flag.String("name", "", "the shipped name: --run pretrained:NAME")
	command := flag.String("command", "", "the command that trained it, for info.json")
	data := flag.String("data", "", "what it trained on, for info.json")
	flag.Parse()
	if *run == "" || *name == "" || *command == "" || *data == "" {
		flag.Usage()
		os.Exit(2)
	}
	dir := filepath.Join("pretrained", "autoencoders", *name)
	if err := runner.Ship(*run, dir, runner.ShipInfo{Command: *command, Data: *data}, pretrained.NewStore(pretrained.DefaultHome())); err != nil {
		fmt.Fprintln(os.Stderr, "ship:", err)
		os.Exit(1)
	}
	fmt.Println("shipped", *run, "as", dir)
}
