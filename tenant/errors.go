package tenant

import "errors"

var (
	// ErrInvalidFile wraps every problem found in a tenants file; the
	// previous tenants stay in force.
	ErrInvalidFile = errors.New("invalid tenants file")
	// ErrAssignment means partition claims kept losing races with other
	// relay nodes; the reload is retried later.
	ErrAssignment = errors.New("tenant partition assignment did not settle")
)
