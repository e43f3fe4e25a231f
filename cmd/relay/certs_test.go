package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRunCertsInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var stdout, stderr bytes.Buffer
	code := runCerts([]string{"init", "--dir", dir, "--tenants", "acme, globex"}, &stdout, &stderr)
	require.Equal(t, 0, code, "stderr: %s", stderr.String())
	assert.Empty(t, stderr.String())

	names := []string{"ca", "relay-client", "ingress", "acme", "globex"}
	var want []string
	for _, n := range names {
		want = append(want, filepath.Join(dir, n+".pem"), filepath.Join(dir, n+"-key.pem"))
	}
	assert.Equal(t, want, strings.Fields(stdout.String()), "prints the files written")

	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	for _, n := range names {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, n+".pem"), filepath.Join(dir, n+"-key.pem"))
		require.NoError(t, err, n)
		_, err = cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		assert.NoError(t, err, n)
		if n != "ca" && n != "relay-client" {
			assert.NoError(t, cert.Leaf.VerifyHostname("127.0.0.1"), n)
			assert.NoError(t, cert.Leaf.VerifyHostname("localhost"), n)
		}
	}

	stdout.Reset()
	stderr.Reset()
	code = runCerts([]string{"init", "-dir", dir}, &stdout, &stderr)
	assert.Equal(t, 0, code, "existing files are kept")
	assert.Contains(t, stderr.String(), "nothing written")
	assert.Empty(t, stdout.String())

	// A tenant added later: only its files are written, from the same CA.
	stdout.Reset()
	stderr.Reset()
	code = runCerts([]string{"init", "-dir", dir, "--tenants", "acme,globex,initech"}, &stdout, &stderr)
	assert.Equal(t, 0, code, "stderr: %s", stderr.String())
	assert.Equal(t, []string{filepath.Join(dir, "initech.pem"), filepath.Join(dir, "initech-key.pem")}, strings.Fields(stdout.String()))
	initech, err := tls.LoadX509KeyPair(filepath.Join(dir, "initech.pem"), filepath.Join(dir, "initech-key.pem"))
	require.NoError(t, err)
	_, err = initech.Leaf.Verify(x509.VerifyOptions{Roots: roots})
	assert.NoError(t, err, "issued by the CA already handed out")

	stdout.Reset()
	stderr.Reset()
	code = runCerts([]string{"init", "-dir", dir, "-force"}, &stdout, &stderr)
	assert.Equal(t, 0, code, "stderr: %s", stderr.String())
	assert.Len(t, strings.Fields(stdout.String()), 6)
}

func TestRunCertsErrors(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string // in stderr
	}{
		{"no subcommand", nil, 2, "missing subcommand"},
		{"unknown subcommand", []string{"renew"}, 2, `unknown subcommand "renew"`},
		{"unknown flag", []string{"init", "--days", "3"}, 2, "flag provided but not defined: -days"},
		{"extra argument", []string{"init", "--dir", "DIR", "acme"}, 2, `unexpected argument "acme"`},
		{"bad tenant name", []string{"init", "--dir", "DIR", "--tenants", "acme,../etc"}, 1, `tenant name "../etc"`},
		{"help", []string{"init", "-h"}, 0, "usage: relay certs init"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "DIR", dir)
			}
			var stdout, stderr bytes.Buffer
			code := runCerts(args, &stdout, &stderr)
			assert.Equal(t, tt.wantCode, code)
			assert.Contains(t, stderr.String(), tt.wantErr)
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Empty(t, entries, "nothing is written")
		})
	}
}
