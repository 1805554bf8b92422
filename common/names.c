#include "names.h"

static bool name_char(unsigned char c, bool slash)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || (slash && c == '/');
}

bool mesh_node_name_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > MESH_NODE_NAME_MAX)
        return false;
    unsigned char c0 = (unsigned char)s[0];
    if (c0 == '.' || c0 == '_' || c0 == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!name_char((unsigned char)s[i], false))
            return false;
    return true;
}

bool mesh_dns_label_valid(const char *s, size_t len, size_t max)
{
    if (!s || len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

bool mesh_label_part_valid(const char *s, size_t len, size_t max)
{
    if (!s || len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!name_char((unsigned char)s[i], true))
            return false;
    return true;
}
