package tenant

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/segmentio/kafka-go"
)

// TopicSpec describes a topic the relay needs.
type TopicSpec struct {
	Name       string
	Partitions int
	// Configs are topic configs set at creation, e.g. cleanup.policy.
	Configs map[string]string
	// Enforce also sets Configs on the topic if it exists already: the
	// embedded broker's topics are the relay's own, so a setting changed
	// since they were created (or a fix) reaches them. A real cluster's
	// existing topics are left to their operators.
	Enforce bool
}

// Admin creates and grows the relay's topics. The relay creates what is
// missing at start, whether the broker is embedded or a real cluster.
type Admin struct {
	// Client is a kafka-go client with its Addr set to the bootstrap brokers.
	Client *kafka.Client
	// Brokers are the bootstrap addresses, for exact metadata reads.
	Brokers []string
	// ReplicationFactor for new topics; -1 takes the broker's default.
	ReplicationFactor int
}

// EnsureTopics creates the topics that do not exist yet. Existing topics
// are left as they are (their partition count is grown by EnsurePartitions),
// except for the Configs of specs with Enforce.
func (a *Admin) EnsureTopics(ctx context.Context, specs ...TopicSpec) error {
	req := &kafka.CreateTopicsRequest{}
	for _, s := range specs {
		tc := kafka.TopicConfig{Topic: s.Name, NumPartitions: max(s.Partitions, 1), ReplicationFactor: a.ReplicationFactor}
		for k, v := range s.Configs {
			tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
		}
		req.Topics = append(req.Topics, tc)
	}
	res, err := a.Client.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for name, err := range res.Errors {
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", name, err)
		}
	}
	return a.enforceConfigs(ctx, specs)
}

// enforceConfigs sets the Configs of the specs with Enforce on their
// topics (IncrementalAlterConfigs, SET).
func (a *Admin) enforceConfigs(ctx context.Context, specs []TopicSpec) error {
	req := &kafka.IncrementalAlterConfigsRequest{}
	for _, s := range specs {
		if !s.Enforce || len(s.Configs) == 0 {
			continue
		}
		res := kafka.IncrementalAlterConfigsRequestResource{ResourceType: kafka.ResourceTypeTopic, ResourceName: s.Name}
		for _, k := range slices.Sorted(maps.Keys(s.Configs)) {
			res.Configs = append(res.Configs, kafka.IncrementalAlterConfigsRequestConfig{Name: k, Value: s.Configs[k], ConfigOperation: kafka.ConfigOperationSet})
		}
		req.Resources = append(req.Resources, res)
	}
	if len(req.Resources) == 0 {
		return nil
	}
	res, err := a.Client.IncrementalAlterConfigs(ctx, req)
	if err != nil {
		return fmt.Errorf("set topic configs: %w", err)
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			return fmt.Errorf("set configs of topic %s: %w", r.ResourceName, r.Error)
		}
	}
	return nil
}

// TopicConfig reads one config of topic, as the broker applies it (its
// own default when the topic sets none).
func (a *Admin) TopicConfig(ctx context.Context, topic, name string) (string, error) {
	res, err := a.Client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{name}},
	}})
	if err != nil {
		return "", fmt.Errorf("read config %s of topic %s: %w", name, topic, err)
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			return "", fmt.Errorf("read config %s of topic %s: %w", name, topic, r.Error)
		}
		for _, c := range r.ConfigEntries {
			if c.ConfigName == name {
				return c.ConfigValue, nil
			}
		}
	}
	return "", fmt.Errorf("read config %s of topic %s: not in the answer", name, topic)
}

// Partitions reads topic's partition count from a broker, bypassing the
// client's metadata cache.
func (a *Admin) Partitions(ctx context.Context, topic string) (int, error) {
	var lastErr error
	for _, b := range a.Brokers {
		n, err := readPartitions(ctx, b, topic)
		if err == nil {
			return n, nil
		}
		lastErr = err
	}
	return 0, fmt.Errorf("read partitions of %s: %w", topic, lastErr)
}

func readPartitions(ctx context.Context, broker, topic string) (int, error) {
	conn, err := (&kafka.Dialer{}).DialContext(ctx, "tcp", broker)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	ps, err := conn.ReadPartitions(topic)
	if err != nil {
		return 0, err
	}
	return len(ps), nil
}

// EnsurePartitions grows topic to at least n partitions. Partitions are
// only ever added, so no tenant's partition moves.
func (a *Admin) EnsurePartitions(ctx context.Context, topic string, n int) error {
	have, err := a.Partitions(ctx, topic)
	if err != nil {
		return err
	}
	if have >= n {
		return nil
	}
	res, err := a.Client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: int32(n)}},
	})
	if err != nil {
		return fmt.Errorf("grow %s to %d partitions: %w", topic, n, err)
	}
	if err := res.Errors[topic]; err != nil {
		// Another relay node may have grown it first.
		if have, rerr := a.Partitions(ctx, topic); rerr == nil && have >= n {
			return nil
		}
		return fmt.Errorf("grow %s to %d partitions: %w", topic, n, err)
	}
	return nil
}
