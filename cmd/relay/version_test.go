package main

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

// A build without -X main.version says which commit it is, from what go
// build records; a release build says its version.
func TestDescribeVersion(t *testing.T) {
	vcs := []debug.BuildSetting{
		{Key: "vcs.revision", Value: "00ae930c1d2e3f4a5b6c7d8e9f00112233445566"},
		{Key: "vcs.time", Value: "2026-11-27T12:00:00Z"},
		{Key: "vcs.modified", Value: "false"},
	}
	require.Equal(t, "dev-00ae930c1d2e (2026-11-27T12:00:00Z)", describeVersion("dev", vcs))
	vcs[2].Value = "true"
	require.Equal(t, "dev-00ae930c1d2e (2026-11-27T12:00:00Z, modified)", describeVersion("dev", vcs))
	require.Equal(t, "v1.2.3", describeVersion("v1.2.3", vcs))
	require.Equal(t, "dev", describeVersion("dev", nil), "go run and go test record no commit")
}
