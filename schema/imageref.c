/* imageref.c — Docker's image-reference grammar (see imageref.h):
 *   reference  := [domain '/'] path-component ('/' path-component)* [':' tag]
 *   domain     := a first component with a '.' or ':' in it, or "localhost"
 * Docker says "repository name must be lowercase" for an uppercase
 * repository, so uppercase letters are accepted by the scanner and
 * reported after it. */
#include "schema/imageref.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* path-component: [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)* */
static bool
valid_path_component (const char *s, size_t n, bool *uppercase)
{
  if (n == 0)
    return false;
  size_t i = 0;
  bool need_alnum = true;
  while (i < n)
    {
      char c = s[i];
      if (isupper ((unsigned char) c))
        *uppercase = true;
      if (islower ((unsigned char) c) || isdigit ((unsigned char) c) || isupper ((unsigned char) c))
        {
          need_alnum = false;
          i++;
          continue;
        }
      if (need_alnum)
        return false;
      if (c == '.')
        i++;
      else if (c == '_')
        i += (i + 1 < n && s[i + 1] == '_') ? 2 : 1;
      else if (c == '-')
        while (i < n && s[i] == '-')
          i++;
      else
        return false;
      need_alnum = true;
    }
  return !need_alnum;
}

static bool
looks_like_domain (const char *s, size_t n)
{
  return memchr (s, '.', n) != NULL || memchr (s, ':', n) != NULL
         || (n == 9 && memcmp (s, "localhost", 9) == 0);
}

static bool
valid_domain (const char *s, size_t n)
{
  if (n == 0)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!(isalnum ((unsigned char) s[i]) || s[i] == '.' || s[i] == '-' || s[i] == ':'
          || s[i] == '[' || s[i] == ']'))
      return false;
  return true;
}

int
schema_imageref_check_tag (const char *tag, ps_error **err)
{
  size_t len = strlen (tag);
  if (len == 0)
    return ps_error_set (err, 400, "invalid tag \"\": empty image name");
  if (len > 255 + 128 + 1)
    return ps_error_set (err, 400, "invalid tag \"%s\": name too long", tag);
  const char *name_end = tag + len;
  /* digest */
  const char *at = strchr (tag, '@');
  if (at)
    return ps_error_set (err, 400, "invalid tag \"%s\": a tag cannot contain a digest", tag);
  /* :tag after the last '/' */
  const char *last_slash = strrchr (tag, '/');
  const char *colon = strrchr (last_slash ? last_slash : tag, ':');
  if (colon)
    {
      const char *t = colon + 1;
      size_t tl = strlen (t);
      bool ok = tl > 0 && tl <= 128 && (isalnum ((unsigned char) t[0]) || t[0] == '_');
      for (size_t i = 1; ok && i < tl; i++)
        ok = isalnum ((unsigned char) t[i]) || t[i] == '_' || t[i] == '.' || t[i] == '-';
      if (!ok)
        return ps_error_set (err, 400, "invalid tag \"%s\": invalid tag format", tag);
      name_end = colon;
    }
  const char *p = tag;
  const char *slash = memchr (p, '/', (size_t) (name_end - p));
  if (slash && looks_like_domain (p, (size_t) (slash - p)))
    {
      if (!valid_domain (p, (size_t) (slash - p)))
        return ps_error_set (err, 400, "invalid tag \"%s\": invalid registry host", tag);
      p = slash + 1;
    }
  bool uppercase = false;
  while (p < name_end)
    {
      const char *s = memchr (p, '/', (size_t) (name_end - p));
      size_t n = s ? (size_t) (s - p) : (size_t) (name_end - p);
      bool upper_here = false;
      if (!valid_path_component (p, n, &upper_here))
        return ps_error_set (err, 400, "invalid tag \"%s\": invalid reference format", tag);
      uppercase |= upper_here;
      if (s == NULL)
        break;
      p = s + 1;
      if (p == name_end)
        return ps_error_set (err, 400, "invalid tag \"%s\": invalid reference format", tag);
    }
  if (uppercase)
    return ps_error_set (err, 400, "invalid tag \"%s\": repository name must be lowercase", tag);
  return 0;
}

char *
schema_imageref_normalize_compat (const char *tag)
{
  const char *last_slash = strrchr (tag, '/');
  bool has_tag = strchr (last_slash ? last_slash : tag, ':') != NULL;
  const char *first_slash = strchr (tag, '/');
  bool has_domain = first_slash && looks_like_domain (tag, (size_t) (first_slash - tag));
  const char *prefix = has_domain ? "" : (first_slash ? "docker.io/" : "docker.io/library/");
  return xasprintf ("%s%s%s", prefix, tag, has_tag ? "" : ":latest");
}

bool
schema_imageref_loopback_registry (const char *ref)
{
  if (strncmp (ref, "docker://", 9) == 0)
    ref += 9;
  size_t n = strcspn (ref, "/");
  /* "repo/name" names Docker Hub: only a first component that can be a
     host counts (a bare "host:port" is a host). */
  if (ref[n] == '/' && memchr (ref, '.', n) == NULL && memchr (ref, ':', n) == NULL
      && !(n == 9 && strncasecmp (ref, "localhost", 9) == 0))
    return false;
  char host[64];
  const char *h = ref;
  size_t hl;
  if (*ref == '[')
    {
      const char *close = memchr (ref, ']', n);
      if (close == NULL)
        return false;
      h = ref + 1;
      hl = (size_t) (close - h);
    }
  else
    hl = strcspn (ref, ":/");
  if (hl == 0 || hl >= sizeof host)
    return false;
  memcpy (host, h, hl);
  host[hl] = '\0';
  if (strcasecmp (host, "localhost") == 0)
    return true;
  struct in_addr a4;
  if (inet_pton (AF_INET, host, &a4) == 1)
    return (ntohl (a4.s_addr) >> 24) == 127;
  struct in6_addr a6;
  return inet_pton (AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK (&a6);
}
