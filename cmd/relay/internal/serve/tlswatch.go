package serve

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// tlsFileCheck is how often the relay re-reads its certificate and CA
// files to report a replacement that does not load.
const tlsFileCheck = 5 * time.Second

// reloader is a set of certificate files read again on Reload, and when
// the certificate in use expires.
type reloader interface {
	Reload() error
	NotAfter() time.Time
}

// tlsGauges are relay_tls_reload_failing{files} and
// relay_tls_cert_not_after_seconds{files}.
type tlsGauges struct {
	failing, notAfter *prometheus.GaugeVec
}

func newTLSGauges(reg prometheus.Registerer) tlsGauges {
	g := tlsGauges{
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_tls_reload_failing",
			Help: "1 while a replaced certificate or key file does not load (the previous ones stay in use), by the files' role: ingress, delivery_client.",
		}, []string{"files"}),
		notAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_tls_cert_not_after_seconds",
			Help: "When the certificate in use expires, in Unix seconds, by the files' role: ingress, delivery_client.",
		}, []string{"files"}),
	}
	reg.MustRegister(g.failing, g.notAfter)
	return g
}

// watchTLSFiles re-reads r's files every tlsFileCheck until ctx ends. A
// replacement that does not load (a new certificate with the old key, a
// file half written) keeps the loaded one in use, as tlsconf does on its
// own at handshakes; this makes it seen: logged when it starts and ends,
// and relay_tls_reload_failing{files=name} is 1 meanwhile. Without it a
// failed rotation would go unnoticed until the old certificate expired.
//
// relay_tls_cert_not_after_seconds{files=name} follows the certificate in
// use, so that an SRE is told before it expires: a certificate that is
// never replaced fails no reload.
func watchTLSFiles(ctx context.Context, log *slog.Logger, gauges tlsGauges, name string, r reloader) {
	gauge := gauges.failing.WithLabelValues(name)
	gauge.Set(0)
	defer gauge.Set(0) // not watched any more (delivery stopped): no stale 1
	expiry := func() {
		if at := r.NotAfter(); !at.IsZero() {
			gauges.notAfter.WithLabelValues(name).Set(float64(at.Unix()))
		}
	}
	expiry()
	defer gauges.notAfter.DeleteLabelValues(name)
	t := time.NewTicker(tlsFileCheck)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		msg := ""
		if err := r.Reload(); err != nil {
			msg = err.Error()
		}
		expiry()
		switch {
		case msg == last:
		case msg != "":
			gauge.Set(1)
			log.Error("certificate files replaced but they do not load; the previous ones stay in use", "files", name, "err", msg)
		default:
			gauge.Set(0)
			log.Info("certificate files load again", "files", name)
		}
		last = msg
	}
}
