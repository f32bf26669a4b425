/* orphans.c — sweeping the working containers of stopped `buildah build`s
 * (see orphans.h for why a time window is all there is to go by). */
#define _GNU_SOURCE
#include "solver/orphans.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/ps.h"
#include "solver/buildah.h"

/* The largest containers.json we read (about 2 KiB per container). */
#define ORPHANS_MAX_STORE_FILE (64 * 1024 * 1024)

struct orphan_watch
{
  uint64_t id;
  bool keeps;
  struct timespec start;
  orphan_watch *next;
};

struct window
{
  struct timespec from, to;
  uint64_t record; /* the stopped build's record, kept until the sweep */
  uint64_t *waiting; /* builds running when the stopped one died */
  size_t n_waiting;
  struct window *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *records_dir; /* <state-dir>/running-builds, NULL before recovery */
static orphan_watch *running;
static struct window *windows;
static uint64_t next_id;
/* When the last build keeping its containers ended (zero: none yet). */
static struct timespec last_keeping_end;

static int
ts_cmp (const struct timespec *a, const struct timespec *b)
{
  if (a->tv_sec != b->tv_sec)
    return a->tv_sec < b->tv_sec ? -1 : 1;
  if (a->tv_nsec != b->tv_nsec)
    return a->tv_nsec < b->tv_nsec ? -1 : 1;
  return 0;
}

/* The record of a running build: "<start sec>.<nsec> <keeps>". */
static char *
record_path (uint64_t id)
{
  return records_dir && id ? xasprintf ("%s/%" PRIu64, records_dir, id) : NULL;
}

orphan_watch *
orphans_build_started (bool keeps_containers)
{
  orphan_watch *w = xcalloc (1, sizeof *w);
  w->keeps = keeps_containers;
  clock_gettime (CLOCK_REALTIME, &w->start);
  pthread_mutex_lock (&lock);
  w->id = ++next_id;
  w->next = running;
  running = w;
  pthread_mutex_unlock (&lock);
  cleanup_free char *path = record_path (w->id);
  cleanup_free char *text = xasprintf ("%lld.%09ld %d\n", (long long) w->start.tv_sec, w->start.tv_nsec,
                                       keeps_containers ? 1 : 0);
  ps_error *err = NULL;
  if (path && ps_write_file (path, text, strlen (text), 0600, &err) < 0)
    {
      /* Only a crash-time sweep is lost. */
      ps_warn ("running build record: %s", err->msg);
      ps_error_free (err);
    }
  return w;
}

/* ---- containers-storage's record of containers ----------------------------- */

bool
orphans_parse_time (const char *s, struct timespec *out)
{
  struct tm tm = { 0 };
  const char *p = s ? strptime (s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
  if (p == NULL)
    return false;
  long nsec = 0;
  if (*p == '.')
    {
      long scale = 100000000L;
      for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
        nsec += (*p - '0') * scale;
    }
  long offset = 0;
  if (*p == '+' || *p == '-')
    {
      int hh, mm;
      if (sscanf (p + 1, "%2d:%2d", &hh, &mm) != 2)
        return false;
      offset = (*p == '+' ? 1 : -1) * (hh * 3600L + mm * 60L);
      p += 6;
    }
  else if (*p == 'Z')
    p++;
  else
    return false;
  if (*p != '\0')
    return false;
  out->tv_sec = timegm (&tm) - offset;
  out->tv_nsec = nsec;
  return true;
}

void
orphans_candidates_free (struct orphan_candidate *c, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      free (c[i].id);
      free (c[i].name);
    }
  free (c);
}

int
orphans_parse_containers (const char *json, struct orphan_candidate **out, size_t *n_out)
{
  *out = NULL;
  *n_out = 0;
  cJSON *root = cJSON_Parse (json);
  if (!cJSON_IsArray (root))
    {
      cJSON_Delete (root);
      return -1;
    }
  struct orphan_candidate *c = xcalloc ((size_t) cJSON_GetArraySize (root) + 1, sizeof *c);
  size_t n = 0;
  const cJSON *item;
  cJSON_ArrayForEach (item, root)
    {
      const char *id = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (item, "id"));
      const char *created = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (item, "created"));
      struct timespec t;
      if (id == NULL || !orphans_parse_time (created, &t))
        continue; /* not a record we understand: never a candidate */
      const cJSON *names = cJSON_GetObjectItemCaseSensitive (item, "names");
      const char *name = cJSON_GetStringValue (cJSON_GetArrayItem (names, 0));
      const char *meta = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (item, "metadata"));
      c[n].id = xstrdup (id);
      c[n].name = xstrdup (name ? name : "");
      c[n].created = t;
      c[n].has_metadata = meta && *meta;
      n++;
    }
  cJSON_Delete (root);
  *out = c;
  *n_out = n;
  return 0;
}

bool
orphans_is_leak (const struct orphan_candidate *c, const struct timespec *from, const struct timespec *to)
{
  if (c->has_metadata || strncmp (c->name, PS_CONTAINER_PREFIX, strlen (PS_CONTAINER_PREFIX)) == 0)
    return false;
  return ts_cmp (&c->created, from) >= 0 && ts_cmp (&c->created, to) <= 0;
}

/* Where this storage keeps its container records: the graph root's
   containers.json, and the run root's volatile-containers.json that newer
   containers-storage versions use for a transient store. */
static bool
store_files (char **graph_file, char **run_file)
{
  const char *info[] = { "info", NULL };
  cleanup_free char *out = NULL;
  ps_error *err = NULL;
  if (buildah_call (info, &out, &err) < 0)
    {
      ps_warn ("cannot find leftover build containers: %s", err->msg);
      ps_error_free (err);
      return false;
    }
  cJSON *root = cJSON_Parse (out);
  const cJSON *store = cJSON_GetObjectItemCaseSensitive (root, "store");
  const char *graph = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (store, "GraphRoot"));
  const char *run = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (store, "RunRoot"));
  const char *driver = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (store, "GraphDriverName"));
  bool ok = graph && run && driver;
  if (ok)
    {
      *graph_file = xasprintf ("%s/%s-containers/containers.json", graph, driver);
      *run_file = xasprintf ("%s/%s-containers/volatile-containers.json", run, driver);
    }
  else
    ps_warn ("cannot find leftover build containers: `buildah info` names no storage");
  cJSON_Delete (root);
  return ok;
}

static void
append_records (const char *path, struct orphan_candidate **all, size_t *n_all)
{
  cleanup_free char *text = NULL;
  if (ps_read_file (path, ORPHANS_MAX_STORE_FILE, &text, NULL, NULL) < 0)
    return; /* absent: nothing recorded there */
  struct orphan_candidate *c;
  size_t n;
  if (orphans_parse_containers (text, &c, &n) < 0)
    {
      ps_warn ("%s is not a containers-storage record; leftover build containers stay", path);
      return;
    }
  *all = xrealloc (*all, (*n_all + n + 1) * sizeof **all);
  memcpy (*all + *n_all, c, n * sizeof *c);
  *n_all += n;
  free (c);
}

/* Remove the containers inside any of the `due` windows and, with `own`,
   every container named by this daemon's tag (buildah_container_name).
   Returns how many were removed. */
static size_t
sweep (const struct window *due, bool own)
{
  cleanup_free char *graph_file = NULL, *run_file = NULL;
  if (!store_files (&graph_file, &run_file))
    return 0;
  struct orphan_candidate *all = NULL;
  size_t n = 0, removed = 0;
  append_records (graph_file, &all, &n);
  append_records (run_file, &all, &n);
  /* Only with containers to judge: the tag is hashed on first use. */
  cleanup_free char *own_prefix = own && n > 0 ? xasprintf (PS_CONTAINER_PREFIX "%s-", buildah_container_tag ()) : NULL;
  for (size_t i = 0; i < n; i++)
    {
      bool leak = own_prefix && ps_str_has_prefix (all[i].name, own_prefix);
      for (const struct window *w = due; w && !leak; w = w->next)
        leak = orphans_is_leak (&all[i], &w->from, &w->to);
      if (!leak)
        continue;
      const char *rm[] = { "rm", all[i].id, NULL };
      ps_error *err = NULL;
      if (buildah_call (rm, NULL, &err) < 0)
        {
          ps_warn ("leftover working container %.12s (%s): %s", all[i].id, all[i].name, err->msg);
          ps_error_free (err);
          continue;
        }
      ps_debug ("removed working container %.12s (%s)", all[i].id, all[i].name);
      removed++;
    }
  orphans_candidates_free (all, n);
  return removed;
}

void
orphans_recover (const char *state_dir)
{
  buildah_set_container_tag_source (state_dir);
  free (records_dir);
  records_dir = xasprintf ("%s/running-builds", state_dir);
  ps_error *err = NULL;
  if (ps_mkdir_p (records_dir, 0700, &err) < 0)
    {
      ps_warn ("running build records: %s", err->msg);
      ps_error_free (err);
      free (records_dir);
      records_dir = NULL;
      return;
    }

  /* The dead run's builds: from the first one's start until now (when it
     died is not known), unless one of them kept its containers. */
  struct window win = { 0 };
  clock_gettime (CLOCK_REALTIME, &win.to);
  size_t builds = 0;
  bool keeper = false;
  DIR *d = opendir (records_dir);
  struct dirent *de;
  while (d && (de = readdir (d)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      cleanup_free char *path = xasprintf ("%s/%s", records_dir, de->d_name);
      cleanup_free char *text = NULL;
      long long sec;
      long nsec;
      int keeps;
      if (ps_read_file (path, 4096, &text, NULL, NULL) == 0 && sscanf (text, "%lld.%ld %d", &sec, &nsec, &keeps) == 3)
        {
          struct timespec start = { (time_t) sec, nsec };
          if (builds++ == 0 || ts_cmp (&start, &win.from) < 0)
            win.from = start;
          keeper |= keeps != 0;
        }
      unlink (path);
    }
  if (d)
    closedir (d);

  bool by_window = builds > 0 && !keeper;
  if (keeper)
    ps_info ("a build interrupted by an earlier stop kept its containers: only podsolve's own are removed");
  size_t removed = sweep (by_window ? &win : NULL, true);
  if (removed)
    ps_info ("removed %zu working container(s) left by an earlier run", removed);
}

static void
window_free (struct window *w)
{
  cleanup_free char *path = record_path (w->record);
  if (path)
    unlink (path);
  free (w->waiting);
  free (w);
}

void
orphans_build_ended (orphan_watch *w, bool stopped)
{
  if (w == NULL)
    return;
  /* Windows wait for builds by id; a stopped build hands its record to its
     own window below (w->id becomes 0), so remember which build this was. */
  const uint64_t id = w->id;
  struct timespec now;
  clock_gettime (CLOCK_REALTIME, &now);
  pthread_mutex_lock (&lock);
  for (orphan_watch **p = &running; *p; p = &(*p)->next)
    if (*p == w)
      {
        *p = w->next;
        break;
      }
  if (w->keeps)
    last_keeping_end = now;

  if (stopped)
    {
      /* Containers a build keeping them made inside this window are
         wanted: then the window is left alone. */
      bool overlapped_keeper = ts_cmp (&last_keeping_end, &w->start) >= 0;
      for (orphan_watch *r = running; r && !overlapped_keeper; r = r->next)
        overlapped_keeper = r->keeps;
      if (w->keeps || overlapped_keeper)
        ps_info ("a stopped build overlapped one that keeps its containers: none are swept");
      else
        {
          struct window *win = xcalloc (1, sizeof *win);
          win->from = w->start;
          win->to = now;
          win->record = w->id;
          w->id = 0; /* its record now belongs to the window */
          for (orphan_watch *r = running; r; r = r->next)
            {
              win->waiting = xrealloc (win->waiting, (win->n_waiting + 1) * sizeof *win->waiting);
              win->waiting[win->n_waiting++] = r->id;
            }
          win->next = windows;
          windows = win;
        }
    }

  /* This build no longer holds any window back (a stopped build's own
     window never waited for it). */
  struct window *due = NULL;
  for (struct window **p = &windows; *p;)
    {
      struct window *win = *p;
      for (size_t i = 0; i < win->n_waiting;)
        if (win->waiting[i] == id)
          win->waiting[i] = win->waiting[--win->n_waiting];
        else
          i++;
      if (win->n_waiting == 0)
        {
          *p = win->next;
          win->next = due;
          due = win;
        }
      else
        p = &win->next;
    }
  pthread_mutex_unlock (&lock);
  cleanup_free char *path = record_path (w->id);
  if (path)
    unlink (path);
  free (w);

  size_t removed = due ? sweep (due, false) : 0;
  if (removed)
    ps_info ("removed %zu working container(s) left by a stopped build", removed);
  while (due)
    {
      struct window *next = due->next;
      window_free (due);
      due = next;
    }
}
