package nodes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyshard/keyshard/catalog"
	"github.com/keyshard/keyshard/cluster"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard/shardtest"
)

// A node's call is accepted once, by the node it names, with the body it
// signed, within a minute of the catalog's clock.
func TestNodeCalls_SignedOnceForOneReceiverAndBody(t *testing.T) {
	dsn := shardtest.DSN(t, "KEYSHARD_TEST_POSTGRES_DSN")
	ctx := context.Background()
	cat, err := catalog.OpenServer(ctx, dsn, fmt.Sprintf("kt_nodeauth_%d", time.Now().UnixNano()%1e9))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cat.DropServerTable(ctx); _ = cat.Close() }()
	node, err := cluster.Start(ctx, cluster.Config{Name: "x", Address: "http://127.0.0.1:1", Catalog: cat})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	f := &Forwarder{Node: node, Key: []byte("k")}
	body := `[{"sql":"DELETE FROM users","args":[],"changed":1}]`
	sum := sha256.Sum256([]byte(body))
	req := func(to, nonce, payload string, at time.Time) *httptestReq {
		r := httptest.NewRequest("POST", "/_node/tenants/abc/replay", strings.NewReader(payload))
		hexSum := hex.EncodeToString(sum[:])
		r.Header.Set(HeaderNode, "y")
		r.Header.Set(HeaderNodeTo, to)
		r.Header.Set(HeaderNodeNonce, nonce)
		r.Header.Set(HeaderBodySHA, hexSum)
		r.Header.Set(HeaderNodeAuth, f.nodeSig("y", to, nonce, hexSum, "POST", "/_node/tenants/abc/replay", at))
		return &httptestReq{r}
	}
	now := node.CatalogNow()
	if !f.checkNode(req("x", "0123456789abcdef01", body, now).r) {
		t.Fatal("a well-signed call was refused")
	}
	if f.checkNode(req("x", "0123456789abcdef01", body, now).r) {
		t.Fatal("the same call (nonce) was accepted twice")
	}
	if f.checkNode(req("z", "0123456789abcdef02", body, now).r) {
		t.Fatal("a call signed for node z was accepted by x")
	}
	if f.checkNode(req("x", "0123456789abcdef03", body, now.Add(-2*time.Minute)).r) {
		t.Fatal("a call signed two minutes ago was accepted")
	}
	// Another body under the same signature fails when read to its end.
	r := req("x", "0123456789abcdef04", `[{"sql":"INSERT INTO users …"}]`, now).r
	if !f.checkNode(r) {
		t.Fatal("headers refused")
	}
	d := &digestReader{r: r.Body, h: sha256.New(), want: r.Header.Get(HeaderBodySHA)}
	var ee *engine.Error
	if _, err := io.ReadAll(d); !errors.As(err, &ee) || ee.Code != "unauthorized" {
		t.Fatalf("a body that is not the signed one was read without error: %v", err)
	}
}

type httptestReq struct{ r *http.Request }
