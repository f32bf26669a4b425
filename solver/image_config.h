/* image_config.h — the image config a BuildKit frontend hands over with an
 * LLB result: the exporter attr `containerimage.config`, an OCI image
 * config document
 *
 *   {"architecture":"amd64","os":"linux",
 *    "config":{"Env":["K=V"],"Cmd":["app"],"Entrypoint":["/init"],
 *              "WorkingDir":"/srv","User":"1000:1000","Labels":{"k":"v"},
 *              "ExposedPorts":{"8080/tcp":{}},"Volumes":{"/data":{}},
 *              "StopSignal":"SIGTERM"}}
 *
 * checked completely before the solve runs (a 400 naming the field) and
 * exported as BuildKit's image exporter does: the result image's config
 * with the frontend's over it.  Each top-level field and each field of
 * "config" given replaces the image's (Env, Labels, ExposedPorts and
 * Volumes as a whole); a field left out keeps what the image had.  Docker's
 * Healthcheck, Shell and OnBuild are carried as given, as BuildKit keeps
 * them.  history is the frontend's, fitted to the image's layers
 * (normalizeLayersAndHistory); rootfs is always the image's.
 *
 * A configured image is cached like a vertex result: the record
 * <state>/llb-results/<sha256(result image, config text)> names it. */
#ifndef SOLVER_IMAGE_CONFIG_H
#define SOLVER_IMAGE_CONFIG_H

#include <cjson/cJSON.h>

#include "common/ps.h"

struct image_config;

/* Parse and check `json`; errors are 400s naming the field
   ("config.Env[1]: \"X\" is not NAME=value"). */
int image_config_parse (const char *json, struct image_config **out, ps_error **err);
void image_config_free (struct image_config *c);

/* The raw document, as given (the cache key covers it). */
const char *image_config_text (const struct image_config *c);

/* The config document (JSON text, to free) of an image whose config is
   `image_config` once `c` is applied, as described above. */
char *image_config_merge (const char *image_config, const struct image_config *c);

/* The image `image_id` with `c` applied (a new image, or the one a
   previous identical request made: then *cached is true). */
int image_config_apply (const struct image_config *c, const char *image_id, const char *state_dir, char **out_id,
                        bool *cached, ps_error **err);

#endif
