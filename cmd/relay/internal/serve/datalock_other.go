//go:build !unix

package serve

import "os"

// lockDataDir does nothing where flock(2) is not available.
func lockDataDir(string) (*os.File, error) { return nil, nil }
