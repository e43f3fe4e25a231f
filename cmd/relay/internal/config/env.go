package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts every environment override: RELAY_ followed by the key's
// path in upper case with '_' for '.', e.g. RELAY_INGRESS_LISTEN for
// ingress.listen, RELAY_KAFKA_BROKERS (comma-separated) for kafka.brokers.
const EnvPrefix = "RELAY_"

var durationType = reflect.TypeOf(time.Duration(0))

// field is one settable leaf of Config.
type field struct {
	key string // ingress.listen
	env string // RELAY_INGRESS_LISTEN
	v   reflect.Value
}

// fields lists every leaf of c, in declaration order.
func fields(c *Config) []field {
	var out []field
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := range t.NumField() {
			sf := t.Field(i)
			name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
			if !sf.IsExported() || name == "" || name == "-" {
				continue
			}
			key := prefix + name
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct && fv.Type() != durationType {
				walk(fv, key+".")
				continue
			}
			out = append(out, field{key: key, env: EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_")), v: fv})
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

// Keys lists every configuration key with its environment variable.
func Keys() [][2]string {
	var out [][2]string
	for _, f := range fields(&Config{}) {
		out = append(out, [2]string{f.key, f.env})
	}
	return out
}

// applyEnv applies every RELAY_ variable set, and reports every one it
// cannot parse, not only the first.
func applyEnv(c *Config, getenv func(string) string) error {
	var errs []error
	for _, f := range fields(c) {
		if s := getenv(f.env); s != "" {
			if err := assign(f.v, s); err != nil {
				errs = append(errs, fmt.Errorf("%s (%s): %w", f.env, f.key, err))
			}
		}
	}
	return errors.Join(errs...)
}

func set(c *Config, key, value string) error {
	for _, f := range fields(c) {
		if f.key == key {
			return assign(f.v, value)
		}
	}
	return fmt.Errorf("no such key")
}

// assign parses s into v: strings, integers, booleans, durations ("5s"),
// and comma-separated lists.
func assign(v reflect.Value, s string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(n))
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(&b))
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		var items []string
		for _, it := range strings.Split(s, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		if len(items) == 0 {
			// An empty kafka.brokers would quietly start the embedded broker.
			return errors.New("an empty list; unset it to keep the file's value")
		}
		v.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
