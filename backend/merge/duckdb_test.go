package merge_test

import (
	"database/sql"
	"io"
	"math"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/diad-project/diad/backend/merge"
	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/results"
)

// An independent reader, DuckDB, reads the partitioned run with hive
// partitioning (the shard column comes from the folder names): its row
// counts and scores agree with diad's, and so does the image AUROC it
// computes from the partitions' scores and labels with its own SQL.
func TestDuckDBReadsThePartitionedRun(t *testing.T) {
	store := results.Store{Root: t.TempDir()}
	runID := "20261129T120000Z-abcdef"
	images := fakeSplit(runID, 90, 4)
	writeShards(t, store, runID, images, 4, nil)
	rep, err := merge.Run(store, runID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, db)
	glob := filepath.Join(store.Dir(runID), "shard=*", results.ImagesFile)
	src := "read_parquet('" + glob + "', hive_partitioning = true)"

	var rows, shards int
	if err := db.QueryRow("SELECT count(*), count(DISTINCT shard) FROM "+src).Scan(&rows, &shards); err != nil {
		t.Fatal(err)
	}
	if rows != 90 || shards != 4 {
		t.Fatalf("DuckDB reads %d rows in %d shards, want 90 in 4", rows, shards)
	}
	// Per shard, DuckDB's count equals what diad wrote there.
	parts, _, err := store.Partitions(runID)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		im, err := p.Images()
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRow("SELECT count(*) FROM "+src+" WHERE shard = ?", p.Info.Spec().DirName()[len("shard="):]).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != len(im) {
			t.Errorf("%s: DuckDB counts %d rows, diad wrote %d", p.Dir, n, len(im))
		}
	}
	// Scores agree exactly, image by image, with the merged run.
	merged, err := store.Images(runID)
	if err != nil {
		t.Fatal(err)
	}
	q, err := db.Query("SELECT image_id, score FROM " + src + " ORDER BY image_id")
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, q)
	i := 0
	for q.Next() {
		var id int64
		var score float64
		if err := q.Scan(&id, &score); err != nil {
			t.Fatal(err)
		}
		if id != merged[i].ImageID || math.Float64bits(score) != math.Float64bits(merged[i].Score) {
			t.Fatalf("row %d: DuckDB (%d, %v), diad (%d, %v)", i, id, score, merged[i].ImageID, merged[i].Score)
		}
		i++
	}
	if err := q.Err(); err != nil || i != 90 {
		t.Fatalf("%d rows, %v", i, err)
	}
	sameAUROCInSQL(t, db, store, runID, src)
	if rep.Images != 90 {
		t.Fatalf("merge report %+v", rep)
	}
}

// sameAUROCInSQL: image AUROC per category by the Mann-Whitney U statistic
// in SQL (ties count half) over src equals the merged run's I-AUROC.
func sameAUROCInSQL(t *testing.T, db *sql.DB, store results.Store, runID, src string) {
	// Image AUROC per category by the Mann-Whitney U statistic in SQL
	// (ties count half), against the merged run's I-AUROC.
	got, err := store.Metrics(runID)
	if err != nil {
		t.Fatal(err)
	}
	auroc := `
		WITH s AS (SELECT category, gt_label, CAST(score AS FLOAT) AS score FROM ` + src + `)
		SELECT a.category,
		       avg(CASE WHEN a.score > n.score THEN 1.0 WHEN a.score = n.score THEN 0.5 ELSE 0.0 END)
		FROM s a JOIN s n ON a.category = n.category AND a.gt_label = 1 AND n.gt_label = 0
		GROUP BY a.category`
	ar, err := db.Query(auroc)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, ar)
	cats := 0
	for ar.Next() {
		var cat string
		var v float64
		if err := ar.Scan(&cat, &v); err != nil {
			t.Fatal(err)
		}
		cats++
		for _, m := range got {
			if m.Category == cat && m.Metric == metrics.ImageAUROC && math.Abs(m.Value-v) > 1e-12 {
				t.Errorf("%s: I-AUROC by DuckDB %v, by diad's merge %v", cat, v, m.Value)
			}
		}
	}
	if err := ar.Err(); err != nil || cats != 3 {
		t.Fatalf("%d categories, %v", cats, err)
	}
}

// closeAtEnd closes c when the test ends and fails the test if closing fails.
func closeAtEnd(t *testing.T, c io.Closer) {
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
}
