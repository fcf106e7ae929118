// Sends structured records with the Go fluent-logger (github.com/fluent/fluent-logger-golang,
// the library inside Docker's fluentd driver), as Go applications log: Post of a map, so the
// fields are the record itself. Used by tests/it/structured.rs.
//
// Usage: fluent_logger_go HOST PORT N
//
// For each i in 0..N, one event with tag `go.map`, acknowledged (RequestAck): message
// "go message i", level "error", trace_id T(i), span_id S(i) (the same T and S as
// fluent_logger_structured.py), i, count = 3i, ratio = i + 0.5, ok = (i even). Exits 1,
// naming the error, when a post fails.
package main

import (
	"fmt"
	"math/big"
	"os"
	"strconv"

	"github.com/fluent/fluent-logger-golang/fluent"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: fluent_logger_go HOST PORT N")
		os.Exit(2)
	}
	port, _ := strconv.Atoi(os.Args[2])
	n, _ := strconv.Atoi(os.Args[3])
	logger, err := fluent.New(fluent.Config{
		FluentHost: os.Args[1],
		FluentPort: port,
		RequestAck: true,
		MaxRetry:   3,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	t0, _ := new(big.Int).SetString("4bf92f3577b34da6a3ce929d0e0e4736", 16)
	s0, _ := new(big.Int).SetString("00f067aa0ba902b7", 16)
	for i := 0; i < n; i++ {
		t := new(big.Int).Add(t0, big.NewInt(int64(i)))
		s := new(big.Int).Add(s0, big.NewInt(int64(i)))
		record := map[string]interface{}{
			"i":        i,
			"count":    i * 3,
			"ratio":    float64(i) + 0.5,
			"ok":       i%2 == 0,
			"message":  fmt.Sprintf("go message %d", i),
			"level":    "error",
			"trace_id": fmt.Sprintf("%032x", t),
			"span_id":  fmt.Sprintf("%016x", s),
		}
		if err := logger.Post("go.map", record); err != nil {
			fmt.Fprintln(os.Stderr, "post:", err)
			os.Exit(1)
		}
	}
	if err := logger.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		os.Exit(1)
	}
}
