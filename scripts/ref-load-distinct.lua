-- wrk script for scripts/ref-load.sh PROFILE_DISTINCT=1: php-ref's load/post.lua (REF_POST_LUA),
-- and in the profile case a status of its own on every request ("… <thread>-<n>"), so that
-- each request changes the profile. php-ref's own script repeats one body, so within a
-- second the original's UPDATE (ts = time()) writes nothing after the first request.
dofile(assert(os.getenv("REF_POST_LUA"), "REF_POST_LUA: the path of php-ref's load/post.lua"))

if os.getenv("WRK_LABEL") == "profile" then
	local threads, sent = 0, 0

	function setup(thread)
		threads = threads + 1
		thread:set("thread_number", threads)
	end

	function request()
		sent = sent + 1
		return wrk.format(nil, nil, nil, wrk.body .. "%20" .. thread_number .. "-" .. sent)
	end
end
