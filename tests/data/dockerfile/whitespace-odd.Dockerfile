  FROM   a  
	RUN	echo		tab  
   
	
CMD    ["x"]    
RUN echo trailing   
