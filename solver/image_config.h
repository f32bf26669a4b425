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
 * applied to the result image with `buildah from` + `buildah config` +
 * `buildah commit`.  Each field given replaces that field of the result
 * image (Env, Labels, ExposedPorts and Volumes as a whole, as BuildKit's
 * exporter writes the frontend's config as is); a field left out keeps
 * what the image had.  rootfs, history and created are recomputed by the
 * commit, as BuildKit's exporter does; ArgsEscaped has no meaning in an
 * OCI image.  Anything else (Healthcheck, Shell, OnBuild: Docker-format
 * only) is refused.
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

/* The `buildah config` options that turn a container whose config is
   `current` (its OCIv1 "config" object, may be NULL) into `c`. */
void image_config_buildah_args (const struct image_config *c, const cJSON *current, ps_strv *args);

/* The image `image_id` with `c` applied (a new image, or the one a
   previous identical request made: then *cached is true). */
int image_config_apply (const struct image_config *c, const char *image_id, const char *state_dir, char **out_id,
                        bool *cached, ps_error **err);

#endif
