package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/transfer"
)

const moveUsage = `usage: keyshard move SLUG --to sqlite|postgres|mysql [--to-dir DIR] (--url URL | --offline)
       keyshard move SLUG --to-node NODE --catalog DSN [backend flags]

Moves a tenant to another backend, or (SQLite) to another data directory,
e.g. on another disk. The copy is made while the tenant is served; its
writes are fenced only for the final step (milliseconds), and the old copy
is removed once the new one is verified.

Only the process serving the tenant can fence its writes, so:
  --url URL   asks the running server (POST URL/admin/tenants/SLUG/move) and
              shows its progress; the admin token is taken from
              KEYSHARD_ADMIN_TOKEN or <data>/admin-token.
  --offline   moves on the data directory directly. Use it only when no
              server serves this data directory: a server's writes would
              not be fenced and could land on the old copy and be lost.
--to-dir is the target data directory (SQLite; default: the data directory).

--to-node gives a PostgreSQL or MySQL tenant to another node sharing the
catalog, without copying: the tenant's fencing token is raised (give the
backend's DSN), then owner and epoch flip in the catalog; the old owner
commits nothing more. It works while the old owner is down (after its lease
lapsed, its tenants answer 503 until moved). A SQLite tenant moves with its
data: give --url of any node (POST URL/admin/tenants/SLUG/move
{"node":"NODE"}, run by its owner).
`

func runMove(args []string) error {
	fs := flag.NewFlagSet("move", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, moveUsage); fs.PrintDefaults() }
	var sf storageFlags
	sf.register(fs)
	to := fs.String("to", "", "target backend: sqlite, postgres or mysql")
	dir := fs.String("to-dir", "", "target data directory (sqlite; default the data directory)")
	url := fs.String("url", "", "base URL of the server serving the tenant, e.g. http://127.0.0.1:8080")
	offline := fs.Bool("offline", false, "move on the data directory directly; no server may be serving it")
	quiet := fs.Bool("quiet", false, "no progress bar")
	toNode := fs.String("to-node", "", "give the tenant to this node of a shared catalog (no copy)")
	slug, err := parseOneArg(fs, args)
	if err != nil {
		return fmt.Errorf("move: %w", err)
	}
	if *toNode != "" {
		if *to != "" || *dir != "" {
			return errors.New("move: --to-node moves to a node, not to a backend: give one or the other")
		}
		if *url != "" {
			return moveToNodeRemote(sf.cfg.DataDir, strings.TrimSuffix(*url, "/"), slug, *toNode)
		}
		return moveToNode(sf, slug, *toNode)
	}
	if *to == "" {
		return errors.New("move: --to is required")
	}
	switch {
	case *url != "" && *offline:
		return errors.New("move: give --url or --offline, not both")
	case *url != "":
		return moveRemote(sf.cfg.DataDir, strings.TrimSuffix(*url, "/"), slug, *to, *dir, *quiet)
	case !*offline:
		return errors.New("move: a running server must do the move (only it can fence the tenant's writes): pass --url http://HOST:PORT, or --offline if no server serves this data directory")
	}
	a, err := openApp(&sf)
	if err != nil {
		return err
	}
	defer a.Close()
	bar := newBar(-1, "moving "+slug, "rows", false, *quiet)
	res, err := newTransfer(a).Move(context.Background(), slug, transfer.MoveOptions{Backend: *to, Location: *dir,
		Progress: func(p transfer.Progress) { showProgress(bar, p) }})
	_ = bar.Finish()
	fmt.Fprintln(os.Stderr)
	if res != nil {
		printJSON(res)
	}
	return err
}

func showProgress(bar *progressbar.ProgressBar, p transfer.Progress) {
	if p.Total > 0 && bar.GetMax64() != p.Total {
		bar.ChangeMax64(p.Total)
	}
	bar.Describe(fmt.Sprintf("%s: %s %s", p.Tenant, p.Phase, p.Table))
	if p.Phase == "copy" {
		_ = bar.Set64(p.Rows)
	}
}

func printJSON(v any) {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// moveRemote asks a running server to move the tenant and polls its
// progress meanwhile.
func moveRemote(dataDir, base, slug, to, dir string, quiet bool) error {
	token, _, _, err := app.AdminToken(dataDir, os.Getenv("KEYSHARD_ADMIN_TOKEN"))
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"backend": to, "location": dir})
	req, err := http.NewRequest(http.MethodPost, base+"/admin/tenants/"+slug+"/move", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	bar := newBar(-1, "moving "+slug, "rows", false, quiet)
	done := make(chan struct{})
	polled := make(chan struct{})
	go func() { // progress, until the move answers
		defer close(polled)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			preq, _ := http.NewRequest(http.MethodGet, base+"/admin/tenants/"+slug+"/move", nil)
			preq.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(preq)
			if err != nil {
				continue
			}
			var p struct {
				Moving   bool              `json:"moving"`
				Progress transfer.Progress `json:"progress"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
			if p.Moving {
				showProgress(bar, p.Progress)
			}
		}
	}()
	resp, err := http.DefaultClient.Do(req)
	close(done)
	<-polled
	_ = bar.Finish()
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") == nil {
		b = out.Bytes()
	}
	fmt.Println(string(b))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("move: the server answered %s", resp.Status)
	}
	return nil
}
