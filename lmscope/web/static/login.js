// keep the deep link (#run=..., #job=...) through the sign-in: the server's redirect keeps the fragment
"use strict";
document.getElementById("login").action = "/" + location.hash;
