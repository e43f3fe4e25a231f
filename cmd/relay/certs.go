package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/relaymw/relay/tlsconf"
)

const certsUsage = `usage: relay certs init [--dir DIR] [--tenants NAME,...] [--force]

Creates a development CA in DIR and issues from it the relay's client
certificate (relay-client.pem), the ingress server certificate (ingress.pem)
and a server certificate for each tenant instance (<tenant>.pem), each with
its key (*-key.pem). Server certificates are for localhost, 127.0.0.1 and ::1.
Files that exist are kept: with the CA present, it issues from it only the
certificates missing (to add a tenant, list it with the others) and those
expired or expiring within 30 days (run it again to renew them); it
refuses when the CA itself expires within 30 days (--force then). It refuses
certificates without their CA, or a certificate without its key. --force
makes a new CA and replaces every file (certificates handed out from the
old CA stop working). It prints the files it wrote.

`

// runCerts runs "relay certs"; args are the arguments after "certs". It
// returns the exit code: 0 on success, 2 on a usage error, 1 on a failure.
func runCerts(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "relay certs: missing subcommand\n", certsUsage)
		return 2
	}
	if args[0] != "init" {
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, certsUsage, "relay certs init -h lists the flags.\n")
			return 0
		}
		fmt.Fprintf(stderr, "relay certs: unknown subcommand %q\n%s", args[0], certsUsage)
		return 2
	}

	fs := flag.NewFlagSet("relay certs init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "certs", "directory to write the files to (created if missing)")
	tenants := fs.String("tenants", "", "comma-separated tenant names: letters, digits, '-', '_', '.'")
	force := fs.Bool("force", false, "make a new CA and replace every file")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), certsUsage, "flags:\n")
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args[1:], stderr); !ok {
		return code
	}

	var names []string
	for _, t := range strings.Split(*tenants, ",") {
		if t = strings.TrimSpace(t); t != "" {
			names = append(names, t)
		}
	}
	files, err := tlsconf.InitDevCA(*dir, names, *force)
	if err != nil {
		fmt.Fprintf(stderr, "relay certs init: %v\n", err)
		return 1
	}
	for _, p := range files.Written {
		fmt.Fprintln(stdout, p)
	}
	if len(files.Written) == 0 {
		fmt.Fprintln(stderr, "relay certs init: every file exists: nothing written (--force replaces them all, with a new CA)")
	}
	return 0
}
