/* SPDX-License-Identifier: MIT */
/*
 * See schedule.h. The heap orders by (due, export_id) so that the order in which simultaneous
 * fires reach the runner does not depend on insertion order; that keeps tests and logs
 * reproducible.
 */
#include "schedule.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int schedule_plan_start(const struct cron_expr *cron, const struct tz *tz, int64_t last_due,
			int64_t now, bool catch_up, struct schedule_start *ret)
{
	struct schedule_start s = { 0, 0 };
	int r;

	if (last_due >= 0 && last_due < now) {
		int64_t first;

		r = cron_next(cron, tz, last_due, &first);
		if (r < 0 && r != -ERANGE)
			return r;
		if (r == 0 && first <= now && catch_up)
			s.missed_due = first;
	}
	r = cron_next(cron, tz, now, &s.next_due);
	if (r < 0)
		return r;
	*ret = s;
	return 0;
}

struct zone_entry {
	char *name;
	struct tz *tz;
};

struct schedule_zones {
	char *dir;
	struct zone_entry *entries;
	size_t len;
};

struct schedule_zones *schedule_zones_new(const char *zoneinfo_dir)
{
	struct schedule_zones *z = calloc(1, sizeof(*z));

	if (!z)
		return NULL;
	if (zoneinfo_dir) {
		z->dir = strdup(zoneinfo_dir);
		if (!z->dir) {
			free(z);
			return NULL;
		}
	}
	return z;
}

struct schedule_zones *schedule_zones_free(struct schedule_zones *z)
{
	if (!z)
		return NULL;
	for (size_t i = 0; i < z->len; i++) {
		free(z->entries[i].name);
		tzfile_free(z->entries[i].tz);
	}
	free(z->entries);
	free(z->dir);
	free(z);
	return NULL;
}

const struct tz *schedule_zones_get(struct schedule_zones *z, const char *name, char *err,
				    size_t errlen)
{
	struct zone_entry *grown;
	struct tz *tz = NULL;
	char *copy;

	/* Few distinct zones exist in practice; a linear scan beats a hash table here. */
	for (size_t i = 0; i < z->len; i++)
		if (streq(z->entries[i].name, name))
			return z->entries[i].tz;
	if (tzfile_load(name, z->dir, &tz, err, errlen) < 0)
		return NULL;
	copy = strdup(name);
	grown = copy ? realloc(z->entries, (z->len + 1) * sizeof(*grown)) : NULL;
	if (!grown) {
		free(copy);
		tzfile_free(tz);
		set_error(err, errlen, -ENOMEM, "out of memory");
		return NULL;
	}
	z->entries = grown;
	z->entries[z->len++] = (struct zone_entry){ copy, tz };
	return tz;
}

static bool item_less(const struct schedule_item *a, const struct schedule_item *b)
{
	return a->due < b->due || (a->due == b->due && a->export_id < b->export_id);
}

void schedule_heap_init(struct schedule_heap *h)
{
	memset(h, 0, sizeof(*h));
}

void schedule_heap_done(struct schedule_heap *h)
{
	free(h->items);
	memset(h, 0, sizeof(*h));
}

void schedule_heap_clear(struct schedule_heap *h)
{
	h->len = 0;
}

int schedule_heap_push(struct schedule_heap *h, struct schedule_item item)
{
	size_t i;

	if (h->len == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		struct schedule_item *items = realloc(h->items, cap * sizeof(*items));

		if (!items)
			return -ENOMEM;
		h->items = items;
		h->cap = cap;
	}
	i = h->len++;
	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!item_less(&item, &h->items[parent]))
			break;
		h->items[i] = h->items[parent];
		i = parent;
	}
	h->items[i] = item;
	return 0;
}

const struct schedule_item *schedule_heap_peek(const struct schedule_heap *h)
{
	return h->len ? &h->items[0] : NULL;
}

bool schedule_heap_pop(struct schedule_heap *h, struct schedule_item *ret)
{
	struct schedule_item last;
	size_t i = 0;

	if (!h->len)
		return false;
	*ret = h->items[0];
	last = h->items[--h->len];
	for (;;) {
		size_t child = 2 * i + 1;

		if (child >= h->len)
			break;
		if (child + 1 < h->len && item_less(&h->items[child + 1], &h->items[child]))
			child++;
		if (!item_less(&h->items[child], &last))
			break;
		h->items[i] = h->items[child];
		i = child;
	}
	if (h->len)
		h->items[i] = last;
	return true;
}
