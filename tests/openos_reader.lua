-- openos_reader.lua: reads packages and Lua tables the way the original OpenOS pm does,
-- so that tests/test_openos_compat.py can hold repoPackager's output to it.
--
-- Written for pm's tests from the facts of the original's tar library and pm 1.x
-- (AR2000AR/openComputers_codes): a header's checksum is summed over bytes 1-148 and
-- 157-500 with 8 spaces for the field; a block whose sum is no more than that is skipped;
-- the name comes from the 100-byte name field or from a preceding GNU long-name record
-- (type L; a K record replaces the next name too); the ustar prefix field is never used;
-- only types 0, NUL and 5 are extracted and listed; a manifest is loaded with
-- load("return " .. text).
--
-- usage:
--   lua5.3 openos_reader.lua tar PACKAGE.tar   one line per header, then the manifest
--   lua5.3 openos_reader.lua load FILE         the Lua table in FILE, as JSON
--   lua5.3 openos_reader.lua loads FILE        each NUL-terminated text of FILE: a line of
--                                              JSON, or "error <message>"
-- Output lines (tab-separated):
--   header <kind> <name> <size>          every header the reader meets
--   member <kind> <name> <hex of data>   what the original extracts and lists (file, directory)
--   manifest <JSON>                       CONTROL/manifest as load("return " .. text) gives it
--   error <message>                       the reader or load refused (exit status 3)

local BLOCK = 512

local function fail(message)
  io.write("error\t", (tostring(message):gsub("[\t\n]", " ")), "\n")
  os.exit(3)
end

local KINDS = {["0"] = "file", ["\0"] = "file", ["1"] = "link", ["2"] = "symlink", ["3"] = "character",
               ["4"] = "block", ["5"] = "directory", ["6"] = "fifo", ["7"] = "contiguous",
               x = "next file", g = "global extended header", L = "long name", K = "long link name"}

local function until_nul(s)
  return s:match("^[^%z]*")
end

local function octal(s)
  -- as the original: spaces dropped, digits read from the end until one is not a digit
  s = s:gsub("%s", "")
  local value, scale = 0, 1
  for i = #s, 1, -1 do
    local digit = tonumber(s:sub(i, i))
    if not digit then break end
    value = value + digit * scale
    scale = scale * 8
  end
  return math.tointeger(value) or value
end

local function header_sum(block)
  local sum = 256
  for i = 1, 148 do sum = sum + (block:byte(i) or 0) end
  for i = 157, 500 do sum = sum + (block:byte(i) or 0) end
  return sum
end

local function json(value)
  local kind = type(value)
  if kind == "string" then
    return '"' .. value:gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif kind == "number" then
    if math.type(value) == "integer" then return string.format("%d", value) end
    if value == math.huge then return "1e999" elseif value == -math.huge then return "-1e999" end
    if value ~= value then return '"NaN"' end
    return string.format("%.17g", value)
  elseif kind == "boolean" then
    return tostring(value)
  elseif kind == "table" then
    local count, keys = 0, {}
    for k in pairs(value) do
      count = count + 1
      keys[#keys + 1] = k
    end
    local sequence = count > 0
    for i = 1, count do
      if value[i] == nil then sequence = false end
    end
    local out = {}
    if sequence then
      for i = 1, count do out[i] = json(value[i]) end
      return "[" .. table.concat(out, ",") .. "]"
    end
    for i, k in ipairs(keys) do keys[i] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = value[k]
      if v == nil then v = value[tonumber(k)] end
      out[#out + 1] = json(k) .. ":" .. json(v)
    end
    return "{" .. table.concat(out, ",") .. "}"
  end
  return '"<' .. kind .. '>"'
end

local function hex(data)
  return (data:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- As the original unserializes: load("return " .. text) in a bare environment, then run.
local function load_table(text)
  local chunk, reason = load("return " .. text, "=manifest", "t", {math = {huge = math.huge}})
  if not chunk then return nil, reason end
  local ok, result = pcall(chunk)
  if not ok then return nil, result end
  if type(result) ~= "table" then return nil, "not a table: " .. type(result) end
  return result
end

local function read_tar(path)
  local handle = io.open(path, "rb")
  if not handle then fail("cannot open " .. path) end
  local long_name, long_link, manifest_text
  while true do
    local block
    repeat
      block = handle:read(BLOCK)
    until not block or header_sum(block) > 256
    if not block then break end
    if #block < BLOCK then fail("Invalid block size -- corrupted file?") end
    local name = until_nul(block:sub(1, 100))
    local size = octal(until_nul(block:sub(125, 136)))
    local stored = octal(until_nul(block:sub(149, 156)))
    local kind = KINDS[block:sub(157, 157)] or "unknown"
    if header_sum(block) ~= stored then fail("Failed header checksum") end
    local data = handle:read(math.ceil(size / BLOCK) * BLOCK)
    if data == nil then data = "" end
    data = data:sub(1, size)
    if kind == "long name" then
      long_name = until_nul(data)
    elseif kind == "long link name" then
      long_link = until_nul(data)
    else
      if long_name then name, long_name = long_name, nil end
      if long_link then name, long_link = long_link, nil end
    end
    io.write("header\t", kind, "\t", name, "\t", tostring(size), "\n")
    if kind == "file" or kind == "directory" then
      io.write("member\t", kind, "\t", name, "\t", kind == "file" and hex(data) or "", "\n")
      if kind == "file" and name == "CONTROL/manifest" then manifest_text = data end
    end
  end
  handle:close()
  if not manifest_text then fail("no CONTROL/manifest") end
  local manifest, reason = load_table(manifest_text)
  if not manifest then fail(reason) end
  io.write("manifest\t", json(manifest), "\n")
end

local mode, path = arg[1], arg[2]
if mode == "tar" and path then
  read_tar(path)
elseif mode == "load" and path then
  local handle = io.open(path, "rb")
  if not handle then fail("cannot open " .. path) end
  local text = handle:read("a")
  handle:close()
  local value, reason = load_table(text)
  if not value then fail(reason) end
  io.write(json(value), "\n")
elseif mode == "loads" and path then
  local handle = io.open(path, "rb")
  if not handle then fail("cannot open " .. path) end
  local data = handle:read("a")
  handle:close()
  for text in data:gmatch("([^%z]*)%z") do
    local value, reason = load_table(text)
    if value then
      io.write(json(value), "\n")
    else
      io.write("error\t", (tostring(reason):gsub("[\t\n]", " ")), "\n")
    end
  end
else
  io.stderr:write("usage: lua5.3 openos_reader.lua tar PACKAGE.tar | load FILE | loads FILE\n")
  os.exit(2)
end
