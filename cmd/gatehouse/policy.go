package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/gatehouse/gatehouse/internal/policy"
)

func init() {
	commands["policy"] = command{summary: "check policy directories and run their fixtures", run: runPolicy}
}

const policyUsage = `usage: gatehouse policy <subcommand> [flags] DIR

  check [-tools FILE] [-schema] [-tool ID] DIR
        validate the *.cedar files in DIR against the schema built from the
        tools declared in DIR's fixture files and in FILE
  test [-v] DIR
        run the fixture files (*.test.yaml) in DIR against its policies
  replay --candidate DIR [--config FILE] [--since 24h] [--json]
        re-decide the calls recorded in the audit log under the candidate
        policies and print the decisions that would change`

func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, policyUsage)
		return fmt.Errorf("%w: policy needs a subcommand", errUsage)
	}
	switch args[0] {
	case "check":
		return runPolicyCheck(args[1:], stdout, stderr)
	case "test":
		return runPolicyTest(args[1:], stdout, stderr)
	case "replay":
		return runPolicyReplay(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, policyUsage)
		return nil
	}
	fmt.Fprintln(stderr, policyUsage)
	return fmt.Errorf("%w: unknown policy subcommand %q", errUsage, args[0])
}

// parsePolicyFlags parses fs and returns its single DIR argument.
func parsePolicyFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (string, error) {
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, policyUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", err
		}
		return "", fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return "", fmt.Errorf("%w: policy %s needs exactly one directory", errUsage, fs.Name())
	}
	return fs.Arg(0), nil
}

func runPolicyCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	toolsFile := fs.String("tools", "", "YAML file with `tools:` (and `totals:`) in the fixture format, added to the schema")
	printSchema := fs.Bool("schema", false, "print the generated Cedar schema")
	tool := fs.String("tool", "", "with -schema, print the schema as typed for this tool id (server__name)")
	dir, err := parsePolicyFlags(fs, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	fixtures, err := policy.ReadFixtures(dir)
	if err != nil {
		return err
	}
	if *toolsFile != "" {
		f, err := policy.ReadFixture(*toolsFile)
		if err != nil {
			return err
		}
		fixtures = append(fixtures, f)
	}
	schema, err := policy.FixtureSchema(fixtures)
	if err != nil {
		return fmt.Errorf("building schema: %w", err)
	}
	if *printSchema {
		b, err := schema.Cedar(*tool)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	}
	set, err := policy.Load(dir, schema)
	if err != nil {
		var le *policy.LoadError
		if errors.As(err, &le) {
			fmt.Fprintln(stderr, le.Error())
			return fmt.Errorf("%d problem(s) in %s", len(le.Problems), dir)
		}
		return err
	}
	counts := map[string]int{}
	for _, p := range set.Policies() {
		counts[p.Effect]++
	}
	for _, w := range set.Warnings() {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: %d policies (%d permit, %d forbid, %d challenge), %d tools in schema, version %s\n",
		dir, len(set.Policies()), counts["permit"], counts["forbid"], counts["challenge"], len(schema.Tools()), set.Version())
	return nil
}

func runPolicyTest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	verbose := fs.Bool("v", false, "list passing cases too")
	dir, err := parsePolicyFlags(fs, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	rep, err := policy.RunFixtures(dir)
	if err != nil {
		return err
	}
	rep.Print(stdout, *verbose)
	if rep.Failed > 0 {
		return exitError{code: 1}
	}
	return nil
}
