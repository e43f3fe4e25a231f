package delivery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Module is what plugs into the consumer runtime: the instance sink, and
// later the bot, agent-routing and privacy modules. Each module runs in its
// own consumer group and is handed every event of its partitions in order.
type Module interface {
	// Name identifies the module in metrics and logs, and names its
	// consumer group: "<group prefix>.<name>".
	Name() string
	// Handle takes one event to its end: done (delivered, processed) or
	// given up on and dead-lettered. It returns nil then, and the runtime
	// commits past the event. A non-nil error means it could not finish,
	// e.g. ctx ended at a rebalance or shutdown: the offset is not
	// committed and the event is handled again, possibly elsewhere. While
	// ctx is alive, the runtime hands the same event again after a backoff.
	//
	// Handle may block as long as it needs: while it does, its partition
	// is paused, and no other partition is. When ctx ends with the cause
	// ErrShuttingDown (context.Cause), the relay is stopping and waits for
	// Handle, up to the drain period: work under way may finish. Any other
	// end is a rebalance, and kafka-go holds every partition of this node
	// until each Handle returned: stop at once.
	Handle(ctx context.Context, ev *Event) error
}

// ErrShuttingDown is the cause (context.Cause) of the context given to
// Module.Handle when it ends because the relay is stopping.
var ErrShuttingDown = errors.New("delivery: shutting down")

// Concurrent is implemented by modules that may handle several events of
// one partition at once, giving up order within it. InFlight returns the
// window for the partition's tenant; 1 keeps strict order.
type Concurrent interface {
	InFlight(tenant string) int
}

// Assignee is implemented by modules that keep state per tenant: at the
// start of each generation, before any Handle of it, the runtime tells
// them which partitions this node now handles, so that they let go of
// the others' (and stop reporting them in metrics).
type Assignee interface {
	Assigned(partitions []int)
}

// Factory builds a module from what the relay gives every module.
type Factory func(deps Deps) (Module, error)

// Deps are what a module may need from the relay.
type Deps struct {
	// Tenants looks up a tenant's current settings by id.
	Tenants Tenants
}

// Modules is a registry of module factories. It is a value, not a global:
// a test builds its own.
type Modules struct {
	mu        sync.Mutex
	factories map[string]Factory
}

// Register adds a module factory under name; a name is taken only once.
func (m *Modules) Register(name string, f Factory) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.factories == nil {
		m.factories = make(map[string]Factory)
	}
	if _, dup := m.factories[name]; dup {
		return fmt.Errorf("delivery: module %q registered twice", name)
	}
	m.factories[name] = f
	return nil
}

// Names lists the registered modules in order.
func (m *Modules) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.factories))
	for n := range m.factories {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// New builds the named module.
func (m *Modules) New(name string, deps Deps) (Module, error) {
	m.mu.Lock()
	f, ok := m.factories[name]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("delivery: no module %q (have %v)", name, m.Names())
	}
	return f(deps)
}
