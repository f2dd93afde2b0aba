/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the streaming importer, through the public API on a real SQLite file.
 * The first input byte picks the kind (profiles or segment), the format (CSV or JSON Lines) and
 * the chunk size the rest is fed in, so record boundaries fall anywhere. Whatever the input, the
 * importer must finish or fail cleanly: no crash, no leak (under ASan), no transaction left open,
 * nothing left staged, and a failed import must not have changed the database.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "importer.h"
#include "store-internal.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct store *store;

static int64_t count(const char *sql)
{
	sqlite3_stmt *st = store_prepare(store, sql);
	int64_t n;

	if (!st || sqlite3_step(st) != SQLITE_ROW)
		abort();
	n = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return n;
}

static char path[] = "/tmp/ccsync-fuzz-importer-XXXXXX";

static void remove_store(void)
{
	char extra[sizeof(path) + 8];

	store = store_free(store);
	unlink(path);
	snprintf(extra, sizeof(extra), "%s-wal", path);
	unlink(extra);
	snprintf(extra, sizeof(extra), "%s-shm", path);
	unlink(extra);
}

static void open_store(void)
{
	char err[512];
	int fd = mkstemp(path);

	if (fd < 0)
		abort();
	close(fd);
	unlink(path); /* store_open creates it with the mode it wants */
	if (store_open(path, STORE_OPEN_CREATE, 1000, &store, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
	atexit(remove_store);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t chunks[] = { 1, 2, 3, 7, 64, 4096 };
	struct importer_options o = { 0 };
	struct importer_result res;
	struct importer *im = NULL;
	int64_t profiles, members;
	char err[1024];
	size_t chunk;
	int r = 0;

	if (!store)
		open_store();
	if (size < 1)
		return 0;
	o.kind = data[0] & 1 ? IMPORTER_SEGMENT : IMPORTER_PROFILES;
	o.format = data[0] & 2 ? IMPORTER_JSONL : IMPORTER_CSV;
	o.segment_name = "fuzz";
	o.id_column = data[0] & 4 ? "id" : NULL;
	chunk = chunks[(data[0] >> 3) % (sizeof(chunks) / sizeof(chunks[0]))];
	data++;
	size--;

	profiles = count("SELECT count(*) FROM profiles");
	members = count("SELECT count(*) FROM segment_members");
	if (importer_new(store, &o, &im, err, sizeof(err)) < 0)
		abort();
	for (size_t off = 0; off < size && r >= 0; off += chunk)
		r = importer_feed(im, data + off, size - off < chunk ? size - off : chunk, err,
				  sizeof(err));
	if (r >= 0)
		r = importer_finish(im, &res, err, sizeof(err));
	importer_free(im);
	if (r < 0 && (!err[0] || count("SELECT count(*) FROM profiles") != profiles ||
		      count("SELECT count(*) FROM segment_members") != members))
		abort();
	if (store_in_transaction(store) ||
	    count("SELECT count(*) FROM temp.ccsync_import_staging") != 0)
		abort();
	/* Keep the database small: fuzzing is about the parser, not about growth. */
	if (profiles + members > 5000 &&
	    sqlite3_exec(store_db(store), "DELETE FROM profiles; DELETE FROM segment_members;",
			 NULL, NULL, NULL) != SQLITE_OK)
		abort();
	return 0;
}
