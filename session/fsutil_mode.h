/* fsutil_mode.h — Go's os.FileMode bits as fsutil Stat.mode carries them
 * (buildkit-protocols.md §3.4): the permission bits are Unix's, the type
 * and special bits are Go's own. */
#ifndef SESSION_FSUTIL_MODE_H
#define SESSION_FSUTIL_MODE_H

#define GO_MODE_DIR 0x80000000u
#define GO_MODE_SYMLINK 0x08000000u
#define GO_MODE_DEVICE 0x04000000u
#define GO_MODE_NAMED_PIPE 0x02000000u
#define GO_MODE_SOCKET 0x01000000u
#define GO_MODE_SETUID 0x00800000u
#define GO_MODE_SETGID 0x00400000u
#define GO_MODE_CHAR_DEVICE 0x00200000u
#define GO_MODE_STICKY 0x00100000u
#define GO_MODE_IRREGULAR 0x00080000u
#define GO_MODE_TYPE 0x8F280000u /* fsutil: requestable iff (mode & this) == 0 */

#endif
